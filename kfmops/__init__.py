"""kfmops: declarative plan/apply for reference state over immutable data."""

__version__ = "0.1.0"

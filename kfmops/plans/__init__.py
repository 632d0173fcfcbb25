"""Plans: the in-memory Action/Change/Plan model, the pure diff and inverse; planfile owns the file format."""

from kfmops.plans.model import Action, Change, Plan, StateRef

__all__ = ["Action", "Change", "Plan", "StateRef"]

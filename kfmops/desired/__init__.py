"""Desired state: YAML documents loaded, validated and expanded into references (pure, no backend I/O)."""

from kfmops.desired.collector import DesiredReference
from kfmops.desired.document import Document
from kfmops.desired.expand import DesiredState, expand
from kfmops.desired.load import load_documents_from, parse_documents

__all__ = ["DesiredReference", "DesiredState", "Document", "expand", "load_documents_from", "parse_documents"]

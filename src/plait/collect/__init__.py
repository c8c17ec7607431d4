"""Collection: HTTP collector, write keys, group commit and bulk import."""

from plait.collect.collector import GroupCommitter
from plait.collect.intake import Intake
from plait.collect.keys import KeyStore

__all__ = [
    "GroupCommitter",
    "Intake",
    "KeyStore",
]

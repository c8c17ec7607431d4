"""Identity resolution: identifiers, deterministic stitching, probabilistic matching, merges.

Identity is a derived, versioned view over the log (which is never rewritten):
``ws.identity.resolve()`` derives a version; ``ws.identity.follow()`` keeps assigning
collected events in real time with the same guarded union-find.
"""

from plait.identity.directory import Identity
from plait.identity.graph import Stitcher, profile_id
from plait.identity.identifiers import Registry, normalise_email, normalise_phone
from plait.identity.matching import Comparison, Matcher, MatchModel, default_comparisons
from plait.identity.quality import pairwise_scores
from plait.identity.resolver import ResolveReport, resolve

__all__ = [
    "Comparison",
    "Identity",
    "MatchModel",
    "Matcher",
    "Registry",
    "ResolveReport",
    "Stitcher",
    "default_comparisons",
    "normalise_email",
    "normalise_phone",
    "pairwise_scores",
    "profile_id",
    "resolve",
]

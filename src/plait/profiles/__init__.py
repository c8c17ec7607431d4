"""Profiles: golden records with provenance, behavioural features and timelines."""

from plait.profiles.features import FEATURE_COLUMNS, features_sql
from plait.profiles.golden import golden_sql
from plait.profiles.store import BuildReport, Profiles

__all__ = ["BuildReport", "FEATURE_COLUMNS", "Profiles", "features_sql", "golden_sql"]

"""Real-time decisions: rules and offers as data, contact policies, context, the decider."""

from plait.decide.engine import Decider, Decision, Recorder
from plait.decide.policies import ContactLog, blocked, bucket
from plait.decide.rules import PLACEMENTS, Offer, Rule, RuleBook

__all__ = ["PLACEMENTS", "ContactLog", "Decider", "Decision", "Offer", "Recorder", "Rule", "RuleBook", "blocked",
           "bucket"]

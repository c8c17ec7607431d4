"""Real-time decisions: rules and offers as data, contact policies, context, learning, the decider."""

from plait.decide.context import Calendar, Context, Location, Traffic, Weather
from plait.decide.engine import Decider, Decision, Recorder
from plait.decide.evaluation import Estimate, doubly_robust, ips, read_obd
from plait.decide.learners import LinearThompson, ThompsonSampling
from plait.decide.policies import ContactLog, bucket
from plait.decide.rules import PLACEMENTS, Offer, Rule, RuleBook
from plait.decide.scoring import LogisticScorer

__all__ = ["Calendar", "ContactLog", "Context", "Decider", "Decision", "Estimate", "LinearThompson", "Location",
           "LogisticScorer", "Offer", "PLACEMENTS", "Recorder", "Rule", "RuleBook", "ThompsonSampling", "Traffic",
           "Weather", "bucket", "doubly_robust", "ips", "read_obd"]

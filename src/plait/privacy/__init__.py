"""Privacy: consent as events with one check, and the tamper-evident ledger."""

from plait.privacy.consent import Consent, ConsentDecision, allowed_sql, decide
from plait.privacy.ledger import Ledger, MerkleTree, Receipt, TreeHead, verify_consistency, verify_inclusion

__all__ = ["Consent", "ConsentDecision", "Ledger", "MerkleTree", "Receipt", "TreeHead", "allowed_sql", "decide",
           "verify_consistency", "verify_inclusion"]

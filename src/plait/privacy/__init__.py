"""Privacy: the tamper-evident ledger (consent, erasure and sharing build on it)."""

from plait.privacy.ledger import Ledger, MerkleTree, Receipt, TreeHead, verify_consistency, verify_inclusion

__all__ = ["Ledger", "MerkleTree", "Receipt", "TreeHead", "verify_consistency", "verify_inclusion"]

"""Activation: delivering decisions and triggered actions to the systems that act on them."""

from plait.activate.destinations import Memory, Stream, Webhook
from plait.activate.outbox import Outbox

__all__ = ["Memory", "Outbox", "Stream", "Webhook"]

"""The event contract: Segment calls, the retail catalogue and channels."""

from plait.events.catalogue import CATALOGUE, EventSpec, json_schemas, spec_for
from plait.events.channels import Channel
from plait.events.contract import CALL_TYPES, Batch, Call, Parser, Record

__all__ = [
    "Batch",
    "CALL_TYPES",
    "CATALOGUE",
    "Call",
    "Channel",
    "EventSpec",
    "Parser",
    "Record",
    "json_schemas",
    "spec_for",
]

"""Plait: every channel a retailer has, braided into one customer.

>>> import tempfile, plait
>>> with plait.connect(tempfile.mkdtemp()) as ws:
...     r = ws.log.append([ws.parser.parse({"type": "track", "event": "Store Visit", "userId": "u1",
...                                         "properties": {"store_id": "s1"}}, received_at=0, source="docs")])
...     (r.inserted, ws.log.events().to_pylist()[0]["channel"])
(1, 'store')
"""

from plait.config import Settings
from plait.errors import PlaitError
from plait.events import Channel, Parser, Record
from plait.workspace import Workspace, connect

__version__ = "0.1.0"

__all__ = [
    "Channel",
    "Parser",
    "PlaitError",
    "Record",
    "Settings",
    "Workspace",
    "__version__",
    "connect",
]

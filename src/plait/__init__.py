"""Plait: every channel a retailer has, braided into one customer.

>>> import plait
>>> sorted(plait.__all__)[:3]
['Channel', 'PlaitError', 'Record']
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

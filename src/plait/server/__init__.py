"""The FastAPI application."""

from plait.server.app import create_app

__all__ = [
    "create_app",
]

"""The ``plait`` command line (Typer + Rich)."""

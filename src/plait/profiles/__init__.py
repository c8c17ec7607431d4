"""Profiles."""
class Profiles:
    def __init__(self, ws): self.ws = ws


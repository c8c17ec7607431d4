"""The seeded omnichannel retailer with ground truth."""

from plait.simulate.run import SimulationResult, simulate, true_incremental
from plait.simulate.world import World, build_world

__all__ = [
    "SimulationResult",
    "World",
    "build_world",
    "simulate",
    "true_incremental",
]

"""Moved to :mod:`simulations.analysis.pareto`; this name stays for existing imports."""

from .analysis.pareto import *  # noqa: F401,F403
from .analysis.pareto import __all__  # noqa: F401

"""Moved to :mod:`grids_vla.experiments.demo`; this old path is that same module object."""

import sys

from .experiments import demo

sys.modules[__name__] = demo

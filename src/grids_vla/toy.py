"""Moved to :mod:`grids_vla.experiments.toy`; this old path is that same module object."""

import sys

from .experiments import toy

sys.modules[__name__] = toy

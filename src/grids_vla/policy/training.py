"""Moved to :mod:`grids_vla.experiments.train`; this old path is that same module object, so imports and
monkeypatching through it keep working."""

import sys

from ..experiments import train

sys.modules[__name__] = train

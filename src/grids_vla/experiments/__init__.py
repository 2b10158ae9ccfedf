"""What runs experiments with the library: training, LIBERO evaluation, the demo and the toy run.

The library (core, adapters, envs, policy) never imports this package; each module here that adds a ``grids-vla``
subcommand is listed in :data:`grids_vla.cli.COMMAND_MODULES`.
"""

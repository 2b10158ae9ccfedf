"""LIBERO tasks without downloads: env layer, scripted expert, demo generation, robustness perturbations.

Modules, each importing only those above it:

* ``suites``: suite names, step limits, cameras, the robot-state layout (no simulator);
* ``dataset``: read demo files for training and export (no simulator);
* ``_gl``: the headless GL defaults (``MUJOCO_GL``), imported by ``task_env`` before any simulator loads;
* ``task_env``: one task of a suite LIBERO registers (standard, LIBERO-PRO) as an env;
* ``expert``: the scripted expert; ``perturb``: our perturbations; ``plus``: LIBERO-plus suites; ``targets``: where
  the task's objects are in the camera images;
* ``factory``: ``make_env`` / ``get_suite`` for any suite name;
* ``generate``: expert demos into LIBERO-layout HDF5 files; ``export_lerobot``: those as a LeRobotDataset;
* ``cli``: ``grids-vla data``. ``env`` and ``data`` re-export the old names.
"""

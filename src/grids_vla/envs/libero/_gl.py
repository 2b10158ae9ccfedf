"""Headless rendering: the one place the project picks the GL backend (``MUJOCO_GL``, default ``egl``, and the
matching ``PYOPENGL_PLATFORM``), applied on import. robosuite and mujoco read it when they are first imported, so
every module that builds a simulator imports this module first."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

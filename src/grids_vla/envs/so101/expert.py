"""A scripted expert for both SO-101 tasks, from privileged simulator state.

Phases: hover over the target cube (aimed a few mm off its centre along the jaw axis, toward the fixed jaw), descend
until the grasp point is at the cube's centre height, close, lift until the cube's bottom clears what it must pass
over (the bowl's rim, the base cube's top) by ``CLEARANCE``, carry it over the goal (the bowl's centre, the base
cube's centre) steering the cube itself (not the grasp point) to it, lower it to ``RELEASE_GAP`` above its resting
height, open, rise, wait until the cube rests. Position steps are proportional to the remaining error, clipped
(slower near the cube).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .env import ACTION_SCALE, MAX_STEPS, SO101Env
from .scene import BOWL_RIM_HEIGHT, CUBE_HALF

__all__ = ["Expert", "Rollout", "rollout"]

HOVER = 0.06  # m above the cube's top
CLEARANCE = 0.03  # m between the carried cube's bottom and what it passes over
RELEASE_GAP = {"pick_place_bowl": 0.012, "stack": 0.004}
# m: aim the open jaws this far off the cube's centre, toward the fixed jaw (chosen by trial: aiming at the centre,
# or away from the fixed jaw, knocked the cube over in 1 to 7 of 12 episodes; 4-8 mm toward it in none)
GRASP_SHIFT = 0.006
TOLERANCE = 0.004
CLOSE_STEPS, OPEN_STEPS, SETTLE_STEPS = 8, 6, 6
TIMEOUT = 45
SLOW = 0.4
# jaw commands: half open (about 0.8 rad, twice the 4 cm cube's grasp angle) instead of fully open, whose wide swing
# pushed a nearby distractor into the grasp (pick_place_bowl OOD scene 2)
OPEN, CLOSED = 0.5, 0.0
PHASES = ("hover", "descend", "close", "lift", "carry", "lower", "open", "rise", "settle", "done")


class Expert:
    """Stateful: call :meth:`act` once per step with the env after each observation."""

    def __init__(self) -> None:
        self.phase = "hover"
        self.n = 0

    def _goal(self, env: SO101Env) -> tuple[np.ndarray, float]:
        """Where the cube's centre should end (xy) and the height it must clear."""
        if env.task == "pick_place_bowl":
            floor = 0.004
            return np.asarray([*env.scene.bowl, floor + CUBE_HALF]), BOWL_RIM_HEIGHT
        base = env.object_pos("base_cube")
        return np.asarray([base[0], base[1], base[2] + 2 * CUBE_HALF]), base[2] + CUBE_HALF

    def act(self, env: SO101Env) -> np.ndarray:
        g = env.grasp_point
        cube = env.object_pos("target")
        goal, obstacle = self._goal(env)
        fixed_jaw = env.data.geom_xpos[env.model.geom("fixed_jaw_pad").id]
        shift = GRASP_SHIFT * np.sign(fixed_jaw[1] - g[1])
        carry_z = obstacle + CLEARANCE + CUBE_HALF  # the cube's centre height while carried
        while True:
            p = self.phase
            grip = CLOSED if p in ("close", "lift", "carry", "lower") else OPEN
            if p in ("close", "open", "settle"):
                hold = {"close": CLOSE_STEPS, "open": OPEN_STEPS, "settle": SETTLE_STEPS}[p]
                if self.n >= hold:
                    self._next()
                    continue
                self.n += 1
                return np.asarray([0.0, 0.0, 0.0, grip], dtype=np.float32)
            if p == "done":
                return np.asarray([0.0, 0.0, 0.0, OPEN], dtype=np.float32)
            if p == "hover":
                target = np.asarray([cube[0], cube[1] + shift, cube[2] + CUBE_HALF + HOVER])
            elif p == "descend":
                target = np.asarray([cube[0], cube[1] + shift, cube[2]])
            elif p == "lift":
                target = np.asarray([g[0], g[1], g[2] + carry_z - cube[2]])
            elif p == "carry":
                target = np.asarray([g[0] + goal[0] - cube[0], g[1] + goal[1] - cube[1], g[2] + carry_z - cube[2]])
            elif p == "lower":
                target = g + goal + np.asarray([0, 0, RELEASE_GAP[env.task]]) - cube
            else:  # rise
                target = np.asarray([g[0], g[1], goal[2] + CUBE_HALF + HOVER])
            err = target - g
            if np.linalg.norm(err) < TOLERANCE or self.n >= TIMEOUT:
                self._next()
                continue
            self.n += 1
            limit = SLOW if p in ("descend", "lower") else 1.0
            return np.asarray([*np.clip(err / ACTION_SCALE, -limit, limit), grip], dtype=np.float32)

    def _next(self) -> None:
        self.phase = PHASES[PHASES.index(self.phase) + 1]
        self.n = 0

    @property
    def done(self) -> bool:
        return self.phase == "done"


@dataclass
class Rollout:
    """One expert episode: the simulator state and observation before each action (images only if the env renders),
    the actions."""

    success: bool
    steps: int
    actions: np.ndarray
    states: np.ndarray
    obs: dict[str, np.ndarray] = field(default_factory=dict)


def rollout(env: SO101Env, max_steps: int | None = None, record: bool = True, action_noise: float = 0.0,
            rng: np.random.Generator | None = None) -> Rollout:
    """Run the expert from the env's current (just reset) state until success and the expert is done, or
    ``max_steps`` (default: the task's limit).

    With ``action_noise`` > 0 the arm executes the expert's ``[dx, dy, dz]`` plus Gaussian noise of that standard
    deviation (clipped to [-1, 1]; the grasp command is never perturbed) drawn from ``rng``, while ``actions`` records
    the expert's own command: demos that leave the expert's path and show the way back (as in DART). At 0 the
    rollout is unchanged."""
    if action_noise < 0 or (action_noise > 0 and rng is None):
        raise ValueError(f"action_noise: found {action_noise!r}, expected >= 0 (and an rng when > 0)")
    max_steps = max_steps or MAX_STEPS[env.task]
    expert = Expert()
    obs = env.observe()
    frames: dict[str, list[np.ndarray]] = {}
    actions, states = [], []
    success = False
    for _ in range(max_steps):
        a = expert.act(env)
        states.append(env.get_state())
        if record:
            for k, v in obs.items():
                frames.setdefault(k, []).append(v)
        actions.append(a)
        if action_noise > 0:
            a = a.copy()
            a[:3] = np.clip(a[:3] + rng.normal(0.0, action_noise, 3), -1.0, 1.0)
        obs, success = env.step(a)
        if success and expert.phase in ("settle", "done"):
            break
    out = {k: np.asarray(v) for k, v in frames.items()}
    return Rollout(bool(success), len(actions), np.asarray(actions, dtype=np.float32), np.asarray(states), out)

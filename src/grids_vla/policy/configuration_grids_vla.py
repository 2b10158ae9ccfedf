"""Configuration of the compact GridS VLA: one dataclass, validated on creation, stored as JSON next to the weights."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..grids import POINT_FEATURES

__all__ = ["GridSVLAConfig", "MODEL_TYPE", "PRESETS", "check_counts", "check_field_types", "kept_tokens"]

MODEL_TYPE = "grids_vla"
LANGUAGE_MODES = ("learned", "minilm")
ACTION_HEADS = ("l1", "l2", "flow")
VISION_STEMS = ("patch", "conv", "coordconv")
# Named reducer settings the benchmarks compare; every other field keeps its default unless overridden.
PRESETS: dict[str, dict[str, Any]] = {
    "dense": {"reducer": "dense"},
    # GridS as the paper specifies it (pooled predictor, after the encoder) at several K
    "grids-1": {"reducer": "grids", "k": 1},
    "grids-4": {"reducer": "grids", "k": 4},
    "grids-16": {"reducer": "grids", "k": 16},
    "grids-64": {"reducer": "grids", "k": 64},
    # The paper's ablations at K=16: random points, no geometry embedding, discrete (nearest-patch) sampling, and the
    # fixed grid of anchors (no learned points)
    "grids-16-random": {"reducer": "grids", "k": 16, "reducer_kwargs": {"coords": "random"}},
    "grids-16-nogeom": {"reducer": "grids", "k": 16, "reducer_kwargs": {"geometry": False}},
    "grids-16-nearest": {"reducer": "grids", "k": 16, "reducer_kwargs": {"sampling": "nearest"}},
    "grids-16-fixed": {"reducer": "grids", "k": 16, "reducer_kwargs": {"coords": "fixed-grid"}},
    # Beyond the paper: the attention point head, points conditioned on the instruction (FiLM)
    "grids-16-attn": {"reducer": "grids", "k": 16, "predictor": "attention"},
    "grids-16-film": {"reducer": "grids", "k": 16, "cond_on_language": True},
    # the attention head learning 30x faster than the rest: the first variant whose points follow the task
    # (benchmarks/points/RESULTS.md)
    "grids-16-attn-lr30": {"reducer": "grids", "k": 16, "predictor": "attention", "points_lr_scale": 30.0},
    # the same head told the instruction (its queries get a projection of it): points that can go to the named object
    "grids-16-attn-lr30-lang": {"reducer": "grids", "k": 16, "predictor": "attention", "points_lr_scale": 30.0,
                                "cond_on_language": True},
    # the same head reading the stem's tokens (no position embeddings, no encoder context): points placed by content
    "grids-16-attn-lr30-stem": {"reducer": "grids", "k": 16, "predictor": "attention", "points_lr_scale": 30.0,
                                "point_features": "stem"},
    # and told the instruction: on ten libero_object tasks its points find the named object (benchmarks/points)
    "grids-16-attn-lr30-stem-lang": {"reducer": "grids", "k": 16, "predictor": "attention", "points_lr_scale": 30.0,
                                     "point_features": "stem", "cond_on_language": True},
    # GridS inside the encoder: the map entering ViT block L is resampled, later blocks run on 16 tokens per camera
    "grids-16-l0": {"reducer": "grids", "k": 16, "after_layer": 0},
    "grids-16-l1": {"reducer": "grids", "k": 16, "after_layer": 1},
    # inside the encoder with the instructed stem head: the placement's speed with points that find the named object
    # (benchmarks/points/RESULTS.md), and the fixed grid at the same placement, its baseline
    "grids-16-l0-attn-lr30-stem-lang": {"reducer": "grids", "k": 16, "after_layer": 0, "predictor": "attention",
                                        "points_lr_scale": 30.0, "point_features": "stem", "cond_on_language": True},
    "grids-16-l0-fixed": {"reducer": "grids", "k": 16, "after_layer": 0, "reducer_kwargs": {"coords": "fixed-grid"}},
    # Peers at 16 tokens per camera, and FastV (dense encoder, half the visual tokens dropped after LLM layer 1)
    "topk-16": {"reducer": "topk", "k": 16},
    "tokenlearner-16": {"reducer": "tokenlearner", "k": 16},
    "perceiver-16": {"reducer": "perceiver", "k": 16},
    "pool-16": {"reducer": "pool", "k": 16},
    "tome-16": {"reducer": "tome", "k": 16},
    "random-16": {"reducer": "random", "k": 16},
    "fastv-50": {"reducer": "dense", "fastv_keep": 256, "fastv_layer": 1},
}


def kept_tokens(reducer: str, k: int) -> str:
    """What a reducer keeps per camera, for logs and reports: dense ignores ``k``."""
    return "all tokens" if reducer == "dense" else f"k={k}"


def _is(value: Any, annotation: str) -> bool:
    """Whether ``value`` fits one alternative of a field annotation (``int``, ``float``, ``str``, ``bool``, ``None``,
    ``dict[...]``, ``tuple[T, ...]`` / ``list[T]`` taking a JSON list)."""
    if annotation == "None":
        return value is None
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation in ("int", "float"):
        return not isinstance(value, bool) and isinstance(value, int if annotation == "int" else int | float)
    if annotation == "str":
        return isinstance(value, str)
    if annotation.startswith("dict["):
        return isinstance(value, dict)
    if annotation.startswith(("tuple[", "list[")):
        return isinstance(value, list | tuple) and all(_is(v, _item(annotation)) for v in value)
    return True  # an annotation this check does not know (e.g. Any) takes anything


def _item(annotation: str) -> str:
    """The item type of ``tuple[T, ...]`` or ``list[T]``."""
    return annotation.split("[", 1)[1].split(",")[0].rstrip("]")


def check_field_types(cls: type, values: dict[str, Any]) -> None:
    """Raise ValueError naming the first of ``values`` whose type does not fit its ``cls`` field's annotation, e.g.
    ``"cameras": "agentview"`` for ``tuple[str, ...]`` (a string would otherwise become a tuple of letters)."""
    for f in dataclasses.fields(cls):
        if f.name in values:
            value, kinds = values[f.name], str(f.type).split(" | ")
            if not any(_is(value, kind) for kind in kinds):
                wanted = [f"a list of {_item(k)}" if k.startswith(("tuple[", "list[")) else k for k in kinds]
                raise ValueError(f"{f.name} must be {' or '.join(wanted)}, got {value!r} ({type(value).__name__})")


def check_counts(obj: Any, names: tuple[str, ...], least: int = 1, optional: bool = False) -> None:
    """Raise ValueError naming the first field of ``obj`` among ``names`` that is not an int >= ``least`` (0: "a
    non-negative int", 1: "a positive int"); with ``optional``, ``None`` passes."""
    for name in names:
        value = getattr(obj, name)
        if optional and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            kind = {0: "a non-negative int", 1: "a positive int"}.get(least, f"an int >= {least}")
            raise ValueError(f"{name} must be {kind}, got {value!r}")


@dataclass
class GridSVLAConfig:
    """Every architectural choice of :class:`~grids_vla.policy.modeling_grids_vla.GridSVLAPolicy`.

    The vision encoder is a small ViT shared by all cameras (``image_size / patch_size`` squared tokens per camera),
    followed by a token reducer, then a transformer over ``[language, visual, state, action queries]`` whose action
    query outputs are regressed onto an action chunk. Field names double as ``grids-vla train`` flags.

    ``after_layer`` places the reducer: ``None`` (the paper's placement) resamples the encoder's output; ``L`` in
    ``[0, vision_depth]`` resamples the token map entering ViT block ``L`` (position and camera embeddings already
    added, so a sampled token interpolates them too, and GridS adds its geometry embedding of the point), and the
    remaining ``vision_depth - L`` blocks run on the K tokens of each camera only.

    ``point_features`` says what GridS's point predictor reads: ``"map"`` (the paper) the token map it resamples;
    ``"stem"`` the vision stem's tokens of the same image, before position and camera embeddings are added, while it
    still resamples the map. After the encoder every token carries context and position, so a head reading the map
    can place its points by position alone (a learned fixed pattern); the stem's tokens say only what each patch
    shows, so there the points can be placed only by what the image shows, plus the head's own anchor prior.
    (With ``vision_stem="coordconv"`` the stem's tokens carry their pixel coordinates, so they are not
    position-free.)

    ``vision_stem`` turns each image into its ``patch_size``-px tokens: ``"patch"`` (a ViT's linear patch embedding,
    one strided convolution), ``"conv"`` (``log2(patch_size)`` 3x3 stride-2 convolutions with GroupNorm and GELU,
    then a 1x1 projection; "early convolutions", Xiao et al. 2021), whose tokens already carry local shape and colour
    from overlapping windows, or ``"coordconv"``: the same convolutions on the image with two more channels, each
    pixel's x and y in [-1, 1] (CoordConv, Liu et al. 2018), so the first layer can already tie what it sees to where.
    The token grid is the same in all three. Checkpoints written before the field existed load as ``"patch"``.

    ``action_head`` picks how the chunk is produced: ``"l1"`` regresses it in one pass (L1 loss); ``"l2"`` the same
    with a squared-error loss, whose gradient grows with the error, so the few frames a policy gets badly wrong (an
    episode's first moves) weigh more than the many it nearly fits, where L1 gives every frame the same weight;
    ``"flow"`` is a pi0-style flow-matching head that denoises a Gaussian chunk in ``flow_steps`` Euler steps (see
    :class:`~grids_vla.policy.modeling_grids_vla.GridSVLAPolicy`). Checkpoints written before the field existed load
    as ``"l1"``.

    ``state_dropout`` is the share of training samples whose state token is replaced by a learned "no state" token.
    A policy that reads its own pose can copy the expert's motion from it once the motion has started (the "copycat"
    shortcut; Wen et al. 2020) and then needs the images only in an episode's first few frames, too few for the loss
    to notice. Dropping the state makes every frame a vision problem. ``1.0`` never reads the state (also at
    inference); below 1 evaluation always reads it.

    ``points_lr_scale`` is the one training option kept here, as LeRobot's policy configs keep theirs: the GridS
    coordinate heads learn at ``lr * points_lr_scale`` (see ``experiments.train.param_groups``), so a preset can name
    it. It changes no weight; evaluation ignores it.
    """

    cameras: tuple[str, ...] = ("agentview", "eye_in_hand")
    image_size: int = 128
    patch_size: int = 8
    vision_stem: str = "patch"
    vision_dim: int = 128
    vision_depth: int = 2
    vision_heads: int = 4
    reducer: str = "grids"
    k: int = 16
    predictor: str = "pooled"
    cond_on_language: bool = False
    point_features: str = "map"
    reducer_kwargs: dict[str, Any] = field(default_factory=dict)
    after_layer: int | None = None
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    fastv_keep: int | None = None
    fastv_layer: int = 1
    language: str = "learned"
    instructions: tuple[str, ...] = ()
    state_dim: int = 8
    state_dropout: float = 0.0
    action_dim: int = 7
    chunk: int = 8
    action_head: str = "l1"
    flow_steps: int = 10
    points_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        check_field_types(type(self), vars(self))
        self.cameras = tuple(self.cameras)
        self.instructions = tuple(self.instructions)
        self.reducer_kwargs = dict(self.reducer_kwargs)
        check_counts(self, ("image_size", "patch_size", "vision_dim", "vision_depth", "vision_heads", "k", "dim",
                            "depth", "heads", "state_dim", "action_dim", "chunk", "flow_steps"))
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must be a non-empty list of unique names, got {list(self.cameras)!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        if self.vision_stem not in VISION_STEMS:
            raise ValueError(f"vision_stem must be one of {VISION_STEMS}, got {self.vision_stem!r}")
        if self.vision_stem != "patch" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ValueError(f"vision_stem {self.vision_stem!r} halves the image per layer, so patch_size must be a "
                             f"power of 2 >= 2, got {self.patch_size}")
        if self.vision_dim % self.vision_heads or self.dim % self.heads:
            raise ValueError("vision_dim must be divisible by vision_heads and dim by heads")
        if self.action_head not in ACTION_HEADS:
            raise ValueError(f"action_head must be one of {ACTION_HEADS}, got {self.action_head!r}")
        if self.language not in LANGUAGE_MODES:
            raise ValueError(f"language must be one of {LANGUAGE_MODES}, got {self.language!r}")
        if len(set(self.instructions)) != len(self.instructions):
            raise ValueError("instructions must be unique")
        if self.predictor not in ("pooled", "attention"):
            raise ValueError(f"predictor must be 'pooled' or 'attention', got {self.predictor!r}")
        if self.predictor != "pooled" and self.reducer != "grids":
            raise ValueError(f"predictor is a GridS option; reducer {self.reducer!r} has none")
        if self.point_features not in POINT_FEATURES:
            raise ValueError(f"point_features must be one of {POINT_FEATURES}, got {self.point_features!r}")
        if self.point_features != "map" and (self.reducer != "grids"
                                             or self.reducer_kwargs.get("coords", "predicted") != "predicted"):
            raise ValueError("point_features is what GridS's point predictor reads; this config predicts no points "
                             f"(reducer {self.reducer!r}, coords {self.reducer_kwargs.get('coords', 'predicted')!r})")
        if self.cond_on_language and self.reducer != "grids":
            raise ValueError(f"cond_on_language is a GridS option; reducer {self.reducer!r} takes no conditioning")
        if self.reducer != "dense" and self.k > self.grid_tokens and not self.reducer_kwargs.get("allow_oversample"):
            raise ValueError(f"k={self.k} exceeds the {self.grid_tokens} tokens per camera")
        if self.after_layer is not None:
            if isinstance(self.after_layer, bool) or not isinstance(self.after_layer, int) \
                    or not 0 <= self.after_layer <= self.vision_depth:
                raise ValueError(f"after_layer must be None (after the encoder) or an int in [0, vision_depth="
                                 f"{self.vision_depth}], got {self.after_layer!r}")
            if self.reducer == "dense":
                raise ValueError("after_layer places a reducer inside the encoder; reducer 'dense' keeps every token")
        if self.fastv_keep is not None:
            if self.fastv_keep < 1 or self.fastv_keep > self.visual_tokens:
                raise ValueError(f"fastv_keep must be in [1, {self.visual_tokens}], got {self.fastv_keep}")
            if not 0 <= self.fastv_layer < self.depth - 1:
                raise ValueError(f"fastv_layer must be in [0, {self.depth - 2}] so later layers see the pruned tokens")
        if not self.points_lr_scale > 0:
            raise ValueError(f"points_lr_scale must be > 0, got {self.points_lr_scale!r}")
        if self.points_lr_scale != 1.0 and self.reducer != "grids":
            raise ValueError(f"points_lr_scale is a GridS option; reducer {self.reducer!r} has no coordinate head")
        if not 0.0 <= self.state_dropout <= 1.0:
            raise ValueError(f"state_dropout must be in [0, 1], got {self.state_dropout!r}")
        if not 0.0 <= self.dropout < 1.0 or self.mlp_ratio <= 0:
            raise ValueError("need 0 <= dropout < 1 and mlp_ratio > 0")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GridSVLAConfig:
        """The config named ``name`` in :data:`PRESETS`, with ``overrides`` applied on top."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid per camera ``(H, W)``."""
        side = self.image_size // self.patch_size
        return side, side

    @property
    def grid_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def tokens_per_camera(self) -> int:
        """Visual tokens per camera handed to the transformer (before any FastV pruning)."""
        return self.grid_tokens if self.reducer == "dense" else self.k

    @property
    def visual_tokens(self) -> int:
        return self.tokens_per_camera * len(self.cameras)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["cameras"] = list(self.cameras)
        out["instructions"] = list(self.instructions)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridSVLAConfig:
        """Build from :meth:`to_dict` output; unknown fields are an error (a typo must not pass silently)."""
        if not isinstance(data, dict):
            raise TypeError(f"config must be a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GridSVLAConfig fields: {unknown}")
        return cls(**data)

    def diff(self, other: GridSVLAConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: ``{name: (self's, other's)}``."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}

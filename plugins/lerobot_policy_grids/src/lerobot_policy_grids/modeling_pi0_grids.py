"""``PI0GridsPolicy``: LeRobot's PI0 with GridS after SigLIP + projector (256 -> ``grids_k`` tokens per camera).

``PaliGemmaWithExpertModel.embed_image`` is wrapped on the instance (see :mod:`lerobot_policy_grids.vlm`);
``embed_prefix`` builds its masks from the returned length. Verified with lerobot 0.6.x on Python 3.12
(``tests_py312``, tiny random PaliGemma). :class:`PIGridsMixin` is shared with ``modeling_pi05_grids``.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lerobot.policies.pi0.modeling_pi0 import PI0Policy

from .common import GridSPolicyMixin, as_grids_config
from .configuration_pi0_grids import PI0GridsConfig
from .vlm import install_paligemma_grids, present_then_absent

SETUP_HINT = (
    "PI0 / PI0.5 with GridS need lerobot >= 0.5 on Python 3.12 (released transformers 5.x): build that "
    "environment with scripts/setup_lerobot312_env.sh"
)


def require_working_pi(policy_name: str) -> None:
    """Fail early, naming the fix, where the installed LeRobot cannot build PI0 / PI0.5.

    lerobot 0.4.x builds them only with openpi's patched transformers (``transformers.models.siglip.check``);
    without it the upstream error appears deep inside model construction.
    """
    version = importlib.metadata.version("lerobot")
    if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) >= (0, 5):
        return
    try:
        from transformers.models.siglip import check  # only in openpi's transformers replacement

        patched = bool(check.check_whether_transformers_replace_is_installed_correctly())
    except Exception:  # noqa: BLE001 - any failure means the replacement is absent
        patched = False
    if not patched:
        raise RuntimeError(
            f"{policy_name}: lerobot {version} needs openpi's patched transformers for PI0 / PI0.5, which is not "
            f"installed. {SETUP_HINT}."
        )


def keep_image_embedding_outside_checkpoint(flow_model: Any) -> None:
    """Run ``embed_prefix``'s per-camera image embedding outside ``torch.utils.checkpoint``.

    With ``gradient_checkpointing=True`` upstream recomputes ``embed_image`` during backward, outside
    ``embed_prefix``, where the GridS wrapper no longer knows which camera it embeds. Only that closure
    (``image_embed_func``) is run directly; every other checkpointed piece, and SigLIP's own per-layer
    checkpointing (the vision tower's ``gradient_checkpointing`` flag), stays as upstream has it.
    """
    dense_apply = getattr(flow_model, "_apply_checkpoint", None)
    if dense_apply is None:  # a LeRobot without this helper has nothing to bypass
        return

    def apply_checkpoint(func: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(func, "__name__", "") == "image_embed_func":
            return func(*args, **kwargs)
        return dense_apply(func, *args, **kwargs)

    flow_model._apply_checkpoint = apply_checkpoint


class PIGridsMixin:
    """What PI0 and PI0.5 with GridS share; put before :class:`GridSPolicyMixin` and the upstream policy.

    Construction checks the LeRobot install, converts a plain upstream config (with a warning), wraps
    ``embed_image`` and keeps it out of gradient checkpointing; ``_preprocess_images`` records which camera each
    image is, for the per-camera samplers.

    Strict checkpoint loading: upstream ``from_pretrained`` prefixes every key without ``model.`` with it (so
    the sampler's ``grids.*`` keys arrive as ``model.grids.*``) and turns any loading error into a printed
    warning, returning a model whose weights were not all loaded. Here ``model.grids.*`` is mapped back to
    ``grids.*`` (the flow model has no ``grids`` child, so no upstream key is touched) and an error raised by
    loading, or a checkpoint with no ``model.safetensors`` at all, is raised again from ``from_pretrained``.
    """

    config_class: type
    name: str

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        require_working_pi(self.name)
        super().__init__(as_grids_config(config, self.config_class), **kwargs)  # type: ignore[call-arg]
        self._grids_call_cameras: list[str] = list(self.config.image_features)
        install_paligemma_grids(self, lambda: self._grids_call_cameras)
        keep_image_embedding_outside_checkpoint(self.model)

    def _preprocess_images(self, batch: dict[str, Any]) -> Any:
        """The upstream image preparation, recording which camera each returned image is."""
        images, masks = super()._preprocess_images(batch)  # type: ignore[misc]
        self._grids_call_cameras = present_then_absent(list(self.config.image_features), batch, len(images))
        return images, masks

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        prefix = "model.grids."
        if any(k.startswith(prefix) for k in state_dict):
            state_dict = {("grids." + k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}
        self.__dict__["_grids_load_attempted"] = True
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)  # type: ignore[misc]
        except RuntimeError as exc:
            self.__dict__["_grids_load_error"] = exc
            raise

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path: str | Path, *args: Any, **kwargs: Any) -> Any:
        policy = super().from_pretrained(pretrained_name_or_path, *args, **kwargs)  # type: ignore[misc]
        error = policy.__dict__.pop("_grids_load_error", None)
        attempted = policy.__dict__.pop("_grids_load_attempted", False)
        if error is not None:
            raise error
        if not attempted:
            raise FileNotFoundError(
                f"{cls.__name__}.from_pretrained: no model.safetensors could be loaded from {pretrained_name_or_path!s}"
            )
        return policy


class PI0GridsPolicy(PIGridsMixin, GridSPolicyMixin, PI0Policy):
    """PI0 + GridS. Accepts a :class:`PI0GridsConfig` (or a plain PI0 config, converted with a warning)."""

    config_class = PI0GridsConfig
    name = "pi0_grids"

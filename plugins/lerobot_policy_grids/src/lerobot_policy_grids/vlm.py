"""Wrap a VLA's ``embed_image`` with GridS (SmolVLA, PI0, PI0.5 share this).

In these policies the flow-matching model's ``embed_prefix(images, img_masks, lang_tokens, lang_masks, ...)``
calls ``vlm.embed_image(img)`` once per camera, in camera order, and builds its padding and attention masks
from the length of what comes back. Replacing both methods *on the instances* is therefore enough to hand the
transformer K tokens per camera: no upstream code is copied or edited, and parameter names do not change.

* the ``embed_prefix`` wrapper arms a per-call queue of camera names (and, with language conditioning, the
  masked mean of the instruction's token embeddings), then calls the original;
* the ``embed_image`` wrapper calls the original (vision encoder + connector/projector), then resamples its
  ``(B, H*W, C)`` output to ``(B, K, C)`` with the next camera's sampler;
* with ``grids_after_layer=L`` (an :class:`~lerobot_policy_grids.encoder.EncoderGridS` given as ``encoder``) the
  ``embed_image`` wrapper instead arms that adapter with the camera (and the language condition) and calls the
  original, which then resamples inside the vision tower and returns ``K`` tokens itself; anything else is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from .common import GridSPolicyMixin, sampler_name, square_grid

if TYPE_CHECKING:
    from .encoder import EncoderGridS

__all__ = ["wrap_embed_image", "masked_mean"]


def masked_mean(embeddings: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over the valid positions of ``(B, T, C)`` embeddings (``mask``: ``(B, T)`` bool)."""
    if mask is None:
        return embeddings.mean(dim=1)
    weights = mask.to(embeddings.dtype).unsqueeze(-1)
    return (embeddings * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def wrap_embed_image(
    policy: GridSPolicyMixin,
    flow_model: Any,
    vlm: Any,
    cameras: Sequence[str] | Callable[[], Sequence[str]],
    grid_size: tuple[int, int] | None = None,
    language: bool = False,
    embed_language: Callable[[Tensor], Tensor] | None = None,
    encoder: EncoderGridS | None = None,
) -> None:
    """Insert ``policy.grids`` after ``vlm.embed_image`` (or inside it), driven by ``flow_model.embed_prefix``.

    Args:
        policy: the ``*_grids`` policy (owns ``grids`` and records the last coordinates).
        flow_model: the module whose ``embed_prefix`` embeds images then language (SmolVLA ``VLAFlowMatching``,
            PI0/PI05 ``PI0Pytorch``/``PI05Pytorch``).
        vlm: the module with ``embed_image`` (``SmolVLMWithExpertModel``, ``PaliGemmaWithExpertModel``).
        cameras: names of the images ``embed_prefix`` receives, in order (empty-camera slots included), or a
            function returning them for the current call (when the policy decides per batch).
        grid_size: the dense token grid; ``None`` infers a square grid from the token count.
        language: condition the points on the instruction (needs ``embed_language``).
        embed_language: token ids ``(B, T)`` -> embeddings ``(B, T, C)``; defaults to ``vlm.embed_language_tokens``.
        encoder: the adapter that resamples inside the vision tower (``grids_after_layer``), or ``None`` to resample
            ``embed_image``'s output.
    """
    if getattr(vlm, "_grids_wrapped", False):
        raise RuntimeError("embed_image is already wrapped with GridS")
    camera_list = cameras if callable(cameras) else (lambda names=list(cameras): names)
    dense_embed_image = vlm.embed_image
    dense_embed_prefix = flow_model.embed_prefix
    embed_language = embed_language or getattr(vlm, "embed_language_tokens", None)
    if language and embed_language is None:
        raise ValueError("language conditioning needs an embed_language function")
    pending: dict[str, Any] = {"cameras": [], "cond": None}

    def embed_prefix(images: Sequence[Tensor], img_masks: Any, lang_tokens: Tensor, lang_masks: Tensor,
                     *args: Any, **kwargs: Any) -> Any:
        names = list(camera_list())
        if len(images) != len(names):
            raise ValueError(f"GridS expected {len(names)} images for cameras {names}, got {len(images)}")
        cond = masked_mean(embed_language(lang_tokens), lang_masks) if language else None
        pending.update(cameras=names, cond=cond)
        try:
            return dense_embed_prefix(images, img_masks, lang_tokens, lang_masks, *args, **kwargs)
        finally:
            pending.update(cameras=[], cond=None)

    def embed_image(image: Tensor) -> Tensor:
        if not pending["cameras"]:
            raise RuntimeError("GridS embed_image was called outside embed_prefix, so the camera is unknown")
        camera = pending["cameras"].pop(0)
        if encoder is not None:
            return embed_image_in_encoder(camera, image)
        dense = dense_embed_image(image)
        if dense.ndim != 3:
            raise ValueError(f"embed_image returned shape {tuple(dense.shape)}, expected (B, N, C)")
        grid = grid_size or square_grid(dense.shape[1], f"camera {camera!r}")
        out = policy.grids.forward_camera(sampler_name(camera), dense, grid, cond=pending["cond"], layout="tokens")
        policy._grids_record(camera, out)
        return out.tokens.to(dense.dtype)

    def embed_image_in_encoder(camera: str, image: Tensor) -> Tensor:
        with encoder.armed(sampler_name(camera), pending["cond"]):
            tokens = dense_embed_image(image)
            out = encoder.last_output
        k = policy.grids.sampler.k if policy.grids.shared else policy.grids.samplers[sampler_name(camera)].k
        if out is None or tokens.ndim != 3 or tokens.shape[1] != k:
            got = "no resampling ran" if out is None else f"embed_image returned shape {tuple(tokens.shape)}"
            raise RuntimeError(f"grids_after_layer={encoder.after_layer}: expected {k} tokens per image from inside "
                               f"the vision tower, but {got}")
        policy._grids_record(camera, out)
        return tokens

    flow_model.embed_prefix = embed_prefix
    vlm.embed_image = embed_image
    vlm._grids_wrapped = True


def install_paligemma_grids(policy: Any, camera_order: Callable[[], Sequence[str]]) -> None:
    """Give a PI0 / PI0.5 policy (``policy.model.paligemma_with_expert``) a GridS sampler and wrap its embed_image.

    The dense grid is ``image_resolution / patch_size`` (224 / 14 = 16 x 16 = 256 tokens x 2048 per camera). With
    ``grids_after_layer=L`` the sampler works at SigLIP's width on the patch grid entering vision layer ``L``
    (:mod:`lerobot_policy_grids.encoder`), and the rest of SigLIP and the projector run on ``K`` tokens.
    """
    from .common import build_grids

    pwe = policy.model.paligemma_with_expert
    pg_config = pwe.paligemma.config
    dim = int(pg_config.text_config.hidden_size)
    patch = int(pg_config.vision_config.patch_size)
    res = tuple(policy.config.image_resolution)
    grid = (res[0] // patch, res[1] // patch) if res[0] % patch == 0 and res[1] % patch == 0 else None
    cameras = list(policy.config.image_features)
    after_layer = policy.config.grids_after_layer
    encoder = None
    if after_layer is None:
        policy.grids = build_grids(policy.config, dim, cameras, grid, cond_dim=dim)
    else:
        from .encoder import install_encoder_grids

        tower = pwe.paligemma.model.vision_tower
        tower = getattr(tower, "vision_model", tower)  # SiglipVisionModel wraps the SiglipVisionTransformer
        vision_dim = int(pg_config.vision_config.hidden_size)
        anchor = grid or (res[0] // patch, res[1] // patch)
        policy.grids = build_grids(policy.config, vision_dim, cameras, anchor, cond_dim=dim)
        encoder = install_encoder_grids(
            policy, tower, tower.encoder.layers, policy_type=policy.name, after_layer=after_layer,
            anchor_grid=anchor, fixed_grid=grid, patch_size=(patch, patch),
        )
    wrap_embed_image(
        policy,
        policy.model,
        pwe,
        cameras=camera_order,
        grid_size=grid,
        language=policy.config.grids_conditioning == "language",
        encoder=encoder,
    )


def present_then_absent(image_features: Sequence[str], batch: Any, n_images: int) -> list[str]:
    """Camera order of LeRobot's image preparation: cameras present in the batch, then padded absent ones."""
    present = [k for k in image_features if k in batch]
    absent = [k for k in image_features if k not in batch]
    return (present + absent)[:n_images]

"""GridS inside an openpi-style pi0 prefix, on a tiny random JAX stand-in (no openpi, no checkpoints).

The stand-in keeps openpi's *shapes*, parameter names and wiring, not its size: three 224 x 224
cameras, a SigLIP-shaped ViT (14 x 14 patches -> a 16 x 16 grid = 256 tokens per camera, a learned
position embedding, pre-LN blocks run under ``nn.scan`` over stacked layer params, a final norm and a
head projecting to the LLM width), a Gemma-shaped token embedding and one prefix-attention block, and an
nnx model that wraps linen submodules with ``flax.nnx.bridge.ToNNX`` as openpi's ``Pi0`` does.

Two placements (docs/jax_openpi.md):

* after SigLIP: ``embed_prefix`` reduces each camera's 256 output tokens to K (``MultiCameraGridS``),
  before the language tokens;
* inside SigLIP (``after_layer=L``): the token map entering block L is resampled to K tokens and
  blocks L.. run on K tokens only. The scanned block stack is split at L into two scans
  (``encoderblock_before`` / ``encoderblock_after``; ``scan=False`` keeps one block per layer,
  ``encoderblock_<i>``), and :func:`split_scanned_blocks` converts a checkpoint's stacked
  ``encoderblock`` params to that layout (the encoder's weights are unchanged; GridS's are new).

The script prints the prefix length without and with GridS (3 x 256 + T -> 3 x K + T) for both
placements, checks that pretrained encoder weights load into the split encoder exactly, runs the prefix
block under ``jax.jit`` and takes one gradient through GridS. Run: ``python examples/jax_openpi_standin.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
from flax.nnx import bridge

from grids_vla.jax import GridSampler, MultiCameraGridS

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")  # openpi's camera names
IMAGE, PATCH = 224, 14  # SigLIP So400m/14 at 224 px -> 16 x 16 patches
GRID = (IMAGE // PATCH, IMAGE // PATCH)
WIDTH = 64  # stand-in for the Gemma 2B width (2048): SigLIP's head projects to it
VIT_WIDTH, VIT_DEPTH, VIT_HEADS = 32, 3, 2  # stand-ins for So400m's 1152 width, 27 blocks, 16 heads
MAX_TOKEN_LEN = 48  # pi0's default max_token_len (pi0.5 uses 200)
VOCAB = 300


# -- the SigLIP stand-in, with GridS optionally inside it ----------------------------------------------


def check_after_layer(after_layer: Any, depth: int) -> int:
    """``after_layer`` as an int in ``[0, depth]`` (0: before the first block, depth: after the last), else a
    one-line ``ValueError`` naming that range."""
    if isinstance(after_layer, bool) or not isinstance(after_layer, int | np.integer) or not 0 <= after_layer <= depth:
        raise ValueError(
            f"after_layer must be an int in [0, {depth}] for this {depth}-block encoder "
            f"(0: before the first block, {depth}: after the last), got {after_layer!r}"
        )
    return int(after_layer)


class MlpBlock(nn.Module):
    """Dense(mlp_dim) -> tanh-GELU -> Dense(width), as in the SigLIP blocks."""

    mlp_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.gelu(nn.Dense(self.mlp_dim)(x))  # Dense_0 (created first, so named first)
        return nn.Dense(x.shape[-1])(y)  # Dense_1


class EncoderBlock(nn.Module):
    """One pre-LN ViT block, returning ``(x, intermediates)`` like openpi's scanned SigLIP block."""

    num_heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        out = {}
        y = nn.LayerNorm()(x)
        y = out["sa"] = nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(y, y)
        x = out["+sa"] = x + y
        y = out["mlp"] = MlpBlock(self.mlp_dim)(nn.LayerNorm()(x))
        x = out["+mlp"] = x + y
        return x, out


class Encoder(nn.Module):
    """The block stack (openpi's ``Transformer``), with GridS before block ``grids_after`` when it is set.

    ``scan=True`` runs the blocks under ``nn.scan`` over params stacked on a leading layer axis: one scan
    named ``encoderblock`` without GridS; with GridS, one scan over layers ``[0, L)``
    (``encoderblock_before``), GridS (``grids``), one scan over ``[L, depth)`` (``encoderblock_after``),
    an empty side left out. ``scan=False`` is the Python loop over the layer index (``encoderblock_<i>``,
    unchanged by GridS). Returns the final-norm tokens and ``{"block<i>": intermediates, "grids": output}``.
    """

    depth: int
    num_heads: int
    mlp_dim: int
    scan: bool = True
    grids_after: int | None = None
    grids_k: int = 16
    grid_size: tuple[int, int] = GRID
    grids_kwargs: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.grids_after is not None:
            check_after_layer(self.grids_after, self.depth)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, grid: tuple[int, int]) -> tuple[jax.Array, dict[str, Any]]:
        out: dict[str, Any] = {}
        if self.grids_after is None:
            segments = [(0, self.depth, "encoderblock")]
        else:
            after = self.grids_after
            segments = [(0, after, "encoderblock_before"), (after, self.depth, "encoderblock_after")]
        for i, (start, stop, name) in enumerate(segments):
            if i == 1:  # <- GridS inside the encoder: the (B, H*W, width) map after `after` blocks -> (B, K, width)
                sampler = GridSampler(
                    x.shape[-1], self.grids_k, grid_size=self.grid_size, name="grids", **dict(self.grids_kwargs or {})
                )
                out["grids"] = sampler(x, grid)
                x = out["grids"].tokens
            if start == stop:
                continue
            if self.scan:
                blocks = nn.scan(
                    EncoderBlock, variable_axes={"params": 0}, split_rngs={"params": True}, length=stop - start
                )
                x, stacked = blocks(self.num_heads, self.mlp_dim, name=name)(x)
                for layer in range(start, stop):
                    out[f"block{layer:02d}"] = jax.tree.map(lambda v, j=layer - start: v[j], stacked)
            else:
                for layer in range(start, stop):
                    block = EncoderBlock(self.num_heads, self.mlp_dim, name=f"encoderblock_{layer}")
                    x, out[f"block{layer:02d}"] = block(x)
        return nn.LayerNorm(name="encoder_norm")(x), out


class TinySigLIP(nn.Module):
    """Images ``(B, H, W, 3)`` -> ``((B, N, num_classes) tokens, intermediates)``, openpi's SigLIP call in miniature.

    Patch embedding (``embedding``), learned ``pos_embedding`` added before the blocks, the block stack
    (``Transformer``), and ``head`` projecting every token to the LLM width (``pool_type="none"``).
    ``grids_after=L`` puts GridS inside the encoder before block L, so N = K instead of H*W / 14**2.
    """

    num_classes: int = WIDTH
    width: int = VIT_WIDTH
    depth: int = VIT_DEPTH
    num_heads: int = VIT_HEADS
    mlp_dim: int = 2 * VIT_WIDTH
    patch: int = PATCH
    scan: bool = True
    grids_after: int | None = None
    grids_k: int = 16
    grid_size: tuple[int, int] = GRID
    grids_kwargs: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.grids_after is not None:  # a bad L fails here, when the model is built, not at its first call
            check_after_layer(self.grids_after, self.depth)
        super().__post_init__()

    @nn.compact
    def __call__(self, image: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, Any]]:
        del train  # no dropout in the stand-in
        out: dict[str, Any] = {}
        p = self.patch
        x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", name="embedding")(image.astype(jnp.float32))
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)  # raster order: token i is patch (i // w, i % w)
        pos = self.param("pos_embedding", nn.initializers.normal(1 / np.sqrt(c)), (1, h * w, c))
        x = out["with_posemb"] = x + pos  # GridS, wherever it sits, samples tokens that already carry this
        encoder = Encoder(
            self.depth,
            self.num_heads,
            self.mlp_dim,
            scan=self.scan,
            grids_after=self.grids_after,
            grids_k=self.grids_k,
            grid_size=self.grid_size,
            grids_kwargs=self.grids_kwargs,
            name="Transformer",
        )
        x, out["encoder"] = encoder(x, (h, w))
        out["encoded"] = x
        # openpi also reshapes the encoded tokens to (n, h, w, -1) for its 2-D outputs: with GridS inside the
        # encoder there are K tokens, not h * w, so that reshape is skipped (pool_type="none" returns only x).
        x = out["logits"] = nn.Dense(self.num_classes, name="head")(x)
        return x, out


def split_scanned_blocks(transformer: Mapping[str, Any], after_layer: int) -> dict[str, Any]:
    """Checkpoint layout -> the layout of the encoder with GridS before block ``after_layer`` (scan=True).

    ``transformer`` is the encoder's params subtree (openpi: ``params["PaliGemma"]["img"]["Transformer"]``)
    whose ``encoderblock`` leaves are stacked ``(depth, ...)``. Returns the same subtree with
    ``encoderblock_before`` = ``[:L]`` and ``encoderblock_after`` = ``[L:]`` instead (an empty side left
    out); the values are unchanged and everything else (``encoder_norm``) passes through. GridS's params
    (``grids``) are not in a checkpoint: add them from a fresh init or ``torch_to_flax``.
    """
    out = dict(transformer)
    stacked = out.pop("encoderblock")
    depths = {np.shape(leaf)[0] for leaf in jax.tree.leaves(stacked)}
    if len(depths) != 1:
        raise ValueError(f"the encoderblock leaves are not stacked over one layer axis: leading sizes {sorted(depths)}")
    depth = depths.pop()
    after_layer = check_after_layer(after_layer, depth)
    if after_layer > 0:
        out["encoderblock_before"] = jax.tree.map(lambda v: v[:after_layer], stacked)
    if after_layer < depth:
        out["encoderblock_after"] = jax.tree.map(lambda v: v[after_layer:], stacked)
    return out


def join_scanned_blocks(transformer: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`split_scanned_blocks` (GridS's ``grids`` subtree, if present, is left in place)."""
    out = dict(transformer)
    parts = [out.pop(name) for name in ("encoderblock_before", "encoderblock_after") if name in out]
    out["encoderblock"] = jax.tree.map(lambda *vs: np.concatenate([np.asarray(v) for v in vs]), *parts)
    return out


def unstack_blocks(transformer: Mapping[str, Any]) -> dict[str, Any]:
    """Checkpoint layout -> the loop layout (``scan=False``): ``encoderblock_<i>`` = ``encoderblock[i]``."""
    out = dict(transformer)
    stacked = out.pop("encoderblock")
    depth = np.shape(jax.tree.leaves(stacked)[0])[0]
    for i in range(depth):
        out[f"encoderblock_{i}"] = jax.tree.map(lambda v, i=i: v[i], stacked)
    return out


# -- the pi0 prefix stand-in ---------------------------------------------------------------------------


class TinyGemma(nn.Module):
    """Token embedding plus one prefix-attention block, with Gemma's ``embed`` scaling by ``sqrt(width)``."""

    @nn.compact
    def __call__(self, prefix: jax.Array, mask: jax.Array) -> jax.Array:
        attn_mask = mask[:, None, None, :] & mask[:, None, :, None]  # full attention over the prefix
        y = nn.MultiHeadDotProductAttention(num_heads=4)(nn.RMSNorm()(prefix), mask=attn_mask)
        x = prefix + y
        return x + nn.Dense(WIDTH)(nn.gelu(nn.Dense(2 * WIDTH)(nn.RMSNorm()(x))))

    def embed(self, tokens: jax.Array) -> jax.Array:
        return nn.Embed(VOCAB, WIDTH, name="embedder")(tokens) * jnp.sqrt(WIDTH).astype(jnp.float32)


class StandInPi0(nnx.Module):
    """The prefix half of an openpi ``Pi0``: SigLIP per camera, [GridS], language embedding, prefix block.

    ``grids_k=None``: no GridS. ``after_layer=None``: GridS after SigLIP, one sampler per camera (config
    fields ``grids_k``, ``grids_shared=False``). ``after_layer=L``: GridS inside SigLIP before block L,
    one sampler shared by the cameras like SigLIP's own weights (config field ``grids_after_layer``).
    """

    def __init__(self, grids_k: int | None, rngs: nnx.Rngs, batch: int = 1, after_layer: int | None = None) -> None:
        if after_layer is not None and grids_k is None:
            raise ValueError("after_layer needs grids_k (the number of tokens GridS keeps)")
        in_encoder = after_layer is not None
        siglip = TinySigLIP(grids_after=after_layer, grids_k=grids_k if in_encoder else 16)
        # rngs go to lazy_init, as openpi does: the model state is then the parameters only
        self.img = bridge.ToNNX(siglip)
        self.img.lazy_init(jnp.zeros((batch, IMAGE, IMAGE, 3)), train=False, rngs=rngs)
        self.llm = bridge.ToNNX(TinyGemma())
        self.llm.lazy_init(jnp.zeros((batch, 1, WIDTH)), jnp.ones((batch, 1), bool), rngs=rngs)
        self.llm_embed = bridge.ToNNX(nn.Embed(VOCAB, WIDTH))
        self.llm_embed.lazy_init(jnp.zeros((batch, 1), jnp.int32), rngs=rngs)
        grids = None
        if grids_k is not None and not in_encoder:  # one GridS per camera (shared=False); config field: grids_k
            sampler = MultiCameraGridS(CAMERAS, WIDTH, grids_k, shared=False, sampler_kwargs=dict(grid_size=GRID))
            grids = bridge.ToNNX(sampler)
            grids.lazy_init({c: jnp.zeros((batch, GRID[0] * GRID[1], WIDTH)) for c in CAMERAS}, rngs=rngs)
        self.grids = grids  # assigned once, so nnx sees a submodule (or a static None)

    def embed_prefix(self, obs: dict, use_grids: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Tokens ``(B, S, WIDTH)``, input mask ``(B, S)`` and autoregressive mask ``(S,)``, as in openpi."""
        image_tokens = {name: self.img(obs["images"][name], train=False)[0] for name in CAMERAS}
        if (
            self.grids is not None and use_grids
        ):  # <- GridS after SigLIP: after each camera's SigLIP tokens, before the language tokens
            image_tokens = {name: out.tokens for name, out in self.grids(image_tokens).items()}
        tokens, input_mask, ar_mask = [], [], []
        for name in CAMERAS:
            t = image_tokens[name]  # (B, 256, WIDTH), or (B, K, WIDTH) with GridS in either place
            tokens.append(t)
            input_mask.append(jnp.repeat(obs["image_masks"][name][:, None], t.shape[1], axis=1))
            ar_mask += [False] * t.shape[1]  # image tokens attend to each other
        lang = self.llm_embed(obs["tokenized_prompt"]) * jnp.sqrt(WIDTH).astype(jnp.float32)
        tokens.append(lang)
        input_mask.append(obs["tokenized_prompt_mask"])
        ar_mask += [False] * lang.shape[1]
        return jnp.concatenate(tokens, axis=1), jnp.concatenate(input_mask, axis=1), jnp.asarray(ar_mask)


def fake_obs(seed: int = 0, batch: int = 2) -> dict:
    """A random observation with openpi's keys and shapes (images in [-1, 1], prompt of MAX_TOKEN_LEN ids)."""
    rng = np.random.default_rng(seed)
    return {
        "images": {c: rng.uniform(-1, 1, (batch, IMAGE, IMAGE, 3)).astype(np.float32) for c in CAMERAS},
        "image_masks": {c: np.ones((batch,), bool) for c in CAMERAS},
        "tokenized_prompt": rng.integers(0, VOCAB, (batch, MAX_TOKEN_LEN)).astype(np.int32),
        "tokenized_prompt_mask": np.arange(MAX_TOKEN_LEN)[None].repeat(batch, 0) < 20,
    }


@nnx.jit(static_argnums=(0, 1, 2))
def build(grids_k: int | None, batch: int, after_layer: int | None = None) -> StandInPi0:
    """Create and initialise the model inside one compiled function (eager init is slow on CPU)."""
    return StandInPi0(grids_k, nnx.Rngs(0), batch=batch, after_layer=after_layer)


@nnx.jit(static_argnums=2)
def forward(model: StandInPi0, obs: dict, use_grids: bool) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The prefix (tokens, input mask, ar mask) and the prefix block's output, with or without GridS."""
    prefix, mask, ar_mask = model.embed_prefix(obs, use_grids)
    return prefix, mask, ar_mask, model.llm(prefix, mask)


@nnx.jit
def siglip(model: StandInPi0, image: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """The model's SigLIP on one camera: tokens and intermediates (per-block outputs, GridS output)."""
    return model.img(image, train=False)


def load_with_grids_in_siglip(
    abstract: StandInPi0, checkpoint: Mapping[str, Any], grids_params: Mapping[str, Any], after_layer: int
) -> StandInPi0:
    """openpi's load path (``nnx.split`` -> ``replace_by_pure_dict`` -> ``nnx.merge``) for a model whose SigLIP
    has GridS before block ``after_layer``.

    ``abstract``: the model from ``nnx.eval_shape``; ``checkpoint``: the params of the model without GridS
    (a pure dict, SigLIP blocks stacked in ``img/Transformer/encoderblock``); ``grids_params``: GridS's own
    params, which no checkpoint has (a fresh ``GridSampler.init`` or ``torch_to_flax(state_dict)``). The
    SigLIP blocks are split at L with their values unchanged; any other difference is an error.
    """
    params = {**checkpoint, "img": dict(checkpoint["img"])}
    transformer = split_scanned_blocks(params["img"]["Transformer"], after_layer)
    params["img"]["Transformer"] = {**transformer, "grids": dict(grids_params)}
    graphdef, state = nnx.split(abstract)
    want = jax.tree.map(lambda v: tuple(v.shape), nnx.to_pure_dict(state))
    got = jax.tree.map(lambda v: tuple(np.shape(v)), params)
    if want != got:
        raise ValueError(f"the converted params do not fit the model: expected {want}, got {got}")
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


def main() -> None:
    obs = fake_obs()
    k, n_img = 16, GRID[0] * GRID[1]
    model = build(k, 2)
    for use_grids in (False, True):
        prefix, mask, ar_mask, out = forward(model, obs, use_grids)
        per_cam = k if use_grids else n_img
        expected = len(CAMERAS) * per_cam + MAX_TOKEN_LEN
        assert prefix.shape == (2, expected, WIDTH) and mask.shape == (2, expected) and ar_mask.shape == (expected,)
        assert out.shape == prefix.shape and bool(jnp.isfinite(out).all())
        label = f"with GridS K={k}" if use_grids else "without GridS"
        print(f"{label:>16}: prefix = 3 x {per_cam} + {MAX_TOKEN_LEN} = {prefix.shape[1]} tokens")

    # GridS trains end to end: one gradient of a loss on the prefix output reaches its parameters.
    def loss(m: StandInPi0) -> jax.Array:
        prefix, mask, _ = m.embed_prefix(obs, True)
        return jnp.mean(jnp.square(m.llm(prefix, mask)))

    grads = nnx.jit(nnx.grad(loss, argnums=nnx.DiffState(0, nnx.Param)))(model)
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(nnx.state(grads.grids))))
    assert bool(jnp.isfinite(norm)) and float(norm) > 0
    print(f"gradient norm reaching GridS parameters: {float(norm):.3g}")

    # GridS inside SigLIP, before block L. The "checkpoint" is the model above without its GridS: its SigLIP
    # weights go into the split encoder unchanged; GridS's parameters are new (a fresh init here).
    after = 1
    checkpoint = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    del checkpoint["grids"]  # the released checkpoints have no GridS
    abstract = nnx.eval_shape(lambda: StandInPi0(k, nnx.Rngs(0), batch=2, after_layer=after))
    sampler = GridSampler(VIT_WIDTH, k, grid_size=GRID)  # the one Encoder builds: SigLIP width, 16 x 16 grid
    fresh = jax.jit(sampler.init)(jax.random.key(1), jnp.zeros((1, n_img, VIT_WIDTH)))["params"]
    early = load_with_grids_in_siglip(abstract, checkpoint, fresh, after)

    image = obs["images"][CAMERAS[0]]
    _, dense_out = siglip(model, image)
    tokens, early_out = siglip(early, image)
    seen = [early_out["encoder"][f"block{i:02d}"]["+sa"].shape[1] for i in range(VIT_DEPTH)]
    assert seen == [n_img] * after + [k] * (VIT_DEPTH - after) and tokens.shape == (2, k, WIDTH)
    for i in range(after):  # the blocks before GridS compute exactly what the pretrained encoder computes
        block = f"block{i:02d}"
        np.testing.assert_array_equal(early_out["encoder"][block]["+mlp"], dense_out["encoder"][block]["+mlp"])
    prefix, mask, _, out = forward(early, obs, True)
    assert prefix.shape[1] == len(CAMERAS) * k + MAX_TOKEN_LEN and bool(jnp.isfinite(out).all())
    print(
        f"GridS K={k} inside SigLIP before block {after} of {VIT_DEPTH}: prefix = 3 x {k} + {MAX_TOKEN_LEN} = "
        f"{prefix.shape[1]} tokens; the blocks ran on {', '.join(map(str, seen))} tokens"
    )


if __name__ == "__main__":
    main()

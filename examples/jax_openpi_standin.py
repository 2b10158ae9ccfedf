"""GridS inside an openpi-style pi0 prefix, on a tiny random JAX stand-in (no openpi, no checkpoints).

The stand-in keeps openpi's *shapes* and wiring, not its size: three 224 x 224 cameras, a SigLIP-shaped
encoder (14 x 14 patches -> a 16 x 16 grid = 256 tokens per camera, projected to the LLM width), a
Gemma-shaped token embedding and one prefix-attention block, and an nnx model that wraps linen
submodules with ``flax.nnx.bridge.ToNNX`` as openpi's ``Pi0`` does. ``embed_prefix`` is where GridS
goes: after each camera's image tokens, before the language tokens. The script prints the prefix
length without and with GridS (3 x 256 + T -> 3 x K + T), runs the block on both prefixes under
``jax.jit`` and takes one gradient through GridS. Run: ``python examples/jax_openpi_standin.py``.
"""

from __future__ import annotations

import flax.linen as nn
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
from flax.nnx import bridge

from grids_vla.jax import MultiCameraGridS

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")  # openpi's camera names
IMAGE, PATCH = 224, 14  # SigLIP So400m/14 at 224 px -> 16 x 16 patches
GRID = (IMAGE // PATCH, IMAGE // PATCH)
WIDTH = 64  # stand-in for the Gemma 2B width (2048); GridS works at this width
MAX_TOKEN_LEN = 48  # pi0's default max_token_len (pi0.5 uses 200)
VOCAB = 300


class TinySigLIP(nn.Module):
    """Images ``(B, 224, 224, 3)`` -> ``(B, 256, WIDTH)`` tokens in raster order (like SigLIP + its head)."""

    hidden: int = 32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        b = images.shape[0]
        gh, gw = GRID
        patches = images.reshape(b, gh, PATCH, gw, PATCH, 3).transpose(0, 1, 3, 2, 4, 5)
        x = nn.Dense(self.hidden)(patches.reshape(b, gh * gw, PATCH * PATCH * 3))
        x = x + self.param("pos", nn.initializers.normal(0.02), (gh * gw, self.hidden))
        x = x + nn.Dense(self.hidden)(nn.gelu(nn.Dense(2 * self.hidden)(nn.LayerNorm()(x))))
        return nn.Dense(WIDTH)(nn.LayerNorm()(x))  # projection to the LLM width


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
    """The prefix half of an openpi ``Pi0``: SigLIP per camera, [GridS], language embedding, prefix block."""

    def __init__(self, grids_k: int | None, rngs: nnx.Rngs, batch: int = 1) -> None:
        self.img = bridge.ToNNX(TinySigLIP(), rngs=rngs)
        self.img.lazy_init(jnp.zeros((batch, IMAGE, IMAGE, 3)))
        self.llm = bridge.ToNNX(TinyGemma(), rngs=rngs)
        self.llm.lazy_init(jnp.zeros((batch, 1, WIDTH)), jnp.ones((batch, 1), bool))
        self.llm_embed = bridge.ToNNX(nn.Embed(VOCAB, WIDTH), rngs=rngs)
        self.llm_embed.lazy_init(jnp.zeros((batch, 1), jnp.int32))
        grids = None
        if grids_k is not None:  # one GridS per camera (shared=False); config field: grids_k
            sampler = MultiCameraGridS(CAMERAS, WIDTH, grids_k, shared=False, sampler_kwargs=dict(grid_size=GRID))
            grids = bridge.ToNNX(sampler, rngs=rngs)
            grids.lazy_init({c: jnp.zeros((batch, GRID[0] * GRID[1], WIDTH)) for c in CAMERAS})
        self.grids = grids  # assigned once, so nnx sees a submodule (or a static None)

    def embed_prefix(self, obs: dict, use_grids: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Tokens ``(B, S, WIDTH)``, input mask ``(B, S)`` and autoregressive mask ``(S,)``, as in openpi."""
        image_tokens = {name: self.img(obs["images"][name]) for name in CAMERAS}
        if (
            self.grids is not None and use_grids
        ):  # <- GridS: after each camera's SigLIP tokens, before the language tokens
            image_tokens = {name: out.tokens for name, out in self.grids(image_tokens).items()}
        tokens, input_mask, ar_mask = [], [], []
        for name in CAMERAS:
            t = image_tokens[name]
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


@nnx.jit(static_argnums=(0, 1))
def build(grids_k: int | None, batch: int) -> StandInPi0:
    """Create and initialise the model inside one compiled function (eager init is slow on CPU)."""
    return StandInPi0(grids_k, nnx.Rngs(0), batch=batch)


@nnx.jit(static_argnums=2)
def forward(model: StandInPi0, obs: dict, use_grids: bool) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The prefix (tokens, input mask, ar mask) and the prefix block's output, with or without GridS."""
    prefix, mask, ar_mask = model.embed_prefix(obs, use_grids)
    return prefix, mask, ar_mask, model.llm(prefix, mask)


def main() -> None:
    obs = fake_obs()
    k = 16
    model = build(k, 2)
    n_img = GRID[0] * GRID[1]
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


if __name__ == "__main__":
    main()

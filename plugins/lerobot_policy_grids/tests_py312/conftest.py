"""Offline PI0 / PI0.5 fixtures for lerobot 0.6.x (Python 3.12): tiny PaliGemma + Gemma expert, random weights.

lerobot 0.6 reads no Hub config for PI0/PI05: ``PaliGemmaWithExpertModel`` starts from transformers' default
``PaliGemmaConfig`` and sets the sizes from ``get_gemma_config(variant)`` (2B / 300M Gemma) plus a few fixed
values (SigLIP MLP 4304, projector width 2048, vocabulary 257152). For tests these three names are replaced in
the upstream modules (nothing is copied): ``get_gemma_config`` returns tiny Gemma sizes, and the two model
classes are wrapped so that, just before construction, the vision tower gets 1 small layer, the projector the
tiny text width and both vocabularies 512 entries. The SigLIP grid stays 16 x 16 at 224 px, so each camera
still gives 256 dense tokens.

These tests need lerobot >= 0.5 (``.venv-lerobot312``, ``scripts/test_lerobot312_plugin.sh``); anywhere else the
collection stops with an error, never a skip. Under ``CI=true`` or ``GRIDS_NO_SKIP=1`` (the script sets the latter)
a skipped test fails the run, a module skipped while it is imported included.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lerobot  # noqa: E402

if tuple(int(p) for p in lerobot.__version__.split(".")[:2]) < (0, 5):
    raise RuntimeError(f"tests_py312 (PI0 / PI0.5) need lerobot >= 0.5, found {lerobot.__version__}: run them with "
                       f"scripts/test_lerobot312_plugin.sh (.venv-lerobot312)")

import torch  # noqa: E402
from lerobot.configs.types import FeatureType, PolicyFeature  # noqa: E402
from lerobot.policies.pi0 import modeling_pi0  # noqa: E402
from lerobot.policies.pi05 import modeling_pi05  # noqa: E402

torch.set_num_threads(1)

_skipped: list[str] = []


def _no_skip() -> bool:
    return os.environ.get("GRIDS_NO_SKIP") == "1" or os.environ.get("CI", "").lower() in ("true", "1")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:  # a whole module skipped while it was imported
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # 5: nothing was collected, which is what a skip of every module looks like; it must not pass either
    if _no_skip() and _skipped and exitstatus in (0, 5):
        print(f"\nCI / GRIDS_NO_SKIP=1 but {len(_skipped)} tests were skipped, e.g. {_skipped[:3]}")
        session.exitstatus = 1

TINY_VOCAB = 512
TINY_GEMMA = {  # num_heads must stay 8: upstream's joint attention reshapes to 8 * head_dim
    "gemma_2b": {"width": 64, "depth": 2, "mlp_dim": 128, "num_heads": 8, "num_kv_heads": 1, "head_dim": 8},
    "gemma_300m": {"width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 8, "num_kv_heads": 1, "head_dim": 8},
}
TINY_SIGLIP = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
CAMERAS = ("observation.images.top", "observation.images.wrist")
STATE_DIM = 6
ACTION_DIM = 5
LANG_LEN = 8
DENSE_TOKENS = 256  # (224 / 14) ** 2


def _tiny_gemma_config(module: Any) -> Callable[[str], Any]:
    def get_gemma_config(variant: str) -> Any:
        if variant not in TINY_GEMMA:
            raise ValueError(f"Unknown variant: {variant}")
        return module.GemmaConfig(**TINY_GEMMA[variant])

    return get_gemma_config


def _tiny_paligemma(real: type) -> Callable[..., Any]:
    def build(config: Any) -> Any:
        for key, value in TINY_SIGLIP.items():
            setattr(config.vision_config, key, value)
        config.vision_config.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = TINY_VOCAB
        return real(config=config)

    return build


def _tiny_expert(real: type) -> Callable[..., Any]:
    def build(config: Any) -> Any:
        config.vocab_size = TINY_VOCAB
        return real(config=config)

    return build


def patch_tiny(mp: pytest.MonkeyPatch) -> None:
    """Make PI0 and PI05 model construction tiny (see the module docstring)."""
    for module in (modeling_pi0, modeling_pi05):
        mp.setattr(module, "get_gemma_config", _tiny_gemma_config(module))
        mp.setattr(
            module,
            "PaliGemmaForConditionalGenerationWithPiGemma",
            _tiny_paligemma(module.PaliGemmaForConditionalGenerationWithPiGemma),
        )
        mp.setattr(module, "PiGemmaForCausalLM", _tiny_expert(module.PiGemmaForCausalLM))


@pytest.fixture(scope="session", autouse=True)
def tiny_paligemma() -> Iterator[None]:
    """Tiny PI0 / PI05 models for the whole session."""
    with pytest.MonkeyPatch.context() as mp:
        patch_tiny(mp)
        yield


def features() -> tuple[dict[str, PolicyFeature], dict[str, PolicyFeature]]:
    """Two 224 px cameras and a 6-D state in, 5-D actions out."""
    inputs = {cam: PolicyFeature(type=FeatureType.VISUAL, shape=(3, 224, 224)) for cam in CAMERAS}
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,))
    return inputs, {"action": PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))}


def config_kwargs(**overrides: Any) -> dict[str, Any]:
    """Small chunk and few denoising steps; CPU."""
    inputs, outputs = features()
    kwargs: dict[str, Any] = {
        "input_features": inputs,
        "output_features": outputs,
        "chunk_size": 4,
        "n_action_steps": 4,
        "num_inference_steps": 2,
        "device": "cpu",
    }
    kwargs.update(overrides)
    return kwargs


def make_batch(batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Images in [0, 1] at 224 px, state, an action chunk of 4 and 8 instruction tokens."""
    g = torch.Generator().manual_seed(seed)
    batch = {cam: torch.rand(batch_size, 3, 224, 224, generator=g) for cam in CAMERAS}
    batch["observation.state"] = torch.randn(batch_size, STATE_DIM, generator=g)
    batch["action"] = torch.randn(batch_size, 4, ACTION_DIM, generator=g)
    batch["observation.language.tokens"] = torch.randint(0, TINY_VOCAB, (batch_size, LANG_LEN), generator=g)
    batch["observation.language.attention_mask"] = torch.ones(batch_size, LANG_LEN, dtype=torch.bool)
    return batch

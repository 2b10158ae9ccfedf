"""In-process checks of the ``*_grids`` policies: K tokens reach the transformer, checkpoints, strict loading."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import CAMERAS, LEROBOT, TINY_ACT, TINY_SMOLVLA, features, make_batch


def act_policy(k: int = 4, **overrides: Any) -> Any:
    from lerobot_policy_grids.configuration_act_grids import ACTGridsConfig
    from lerobot_policy_grids.modeling_act_grids import ACTGridsPolicy

    inputs, outputs = features()
    cfg = ACTGridsConfig(input_features=inputs, output_features=outputs, grids_k=k, **{**TINY_ACT, **overrides})
    return ACTGridsPolicy(cfg)


def smolvla_policy(vlm: Path, k: int = 16, **overrides: Any) -> Any:
    from lerobot_policy_grids.configuration_smolvla_grids import SmolVLAGridsConfig
    from lerobot_policy_grids.modeling_smolvla_grids import SmolVLAGridsPolicy
    from lerobot_policy_grids.offline import smolvla_offline_kwargs

    inputs, outputs = features()
    kwargs = {**TINY_SMOLVLA, **smolvla_offline_kwargs(vlm), **overrides}
    return SmolVLAGridsPolicy(SmolVLAGridsConfig(input_features=inputs, output_features=outputs, grids_k=k, **kwargs))


def test_plugin_registers_types() -> None:
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class

    import lerobot_policy_grids

    known = PreTrainedConfig.get_known_choices()
    for name in ("smolvla_grids", "act_grids"):
        assert name in known and name in lerobot_policy_grids.AVAILABLE_TYPES
        assert get_policy_class(name).name == name


def test_act_k_tokens_reach_encoder() -> None:
    policy = act_policy(k=4)
    seen: list[tuple[int, ...]] = []
    policy.model.encoder.register_forward_pre_hook(lambda m, args, kwargs: seen.append(tuple(args[0].shape)),
                                                   with_kwargs=True)
    loss, _ = policy.forward(make_batch())
    loss.backward()
    # latent token + state token + 4 tokens per camera (the dense 2 x 2 ... 64 px map is never flattened in)
    assert seen == [(1 + 1 + 4 * len(CAMERAS), 2, 32)]
    out = policy.grids_last_output()
    assert set(out) == set(CAMERAS)
    assert out[CAMERAS[0]].tokens.shape == (2, 4, 512) and out[CAMERAS[0]].coords.shape == (2, 4, 2)
    assert policy.grids.sampler.mlp[2].weight.grad is not None


def test_act_rejects_language_and_bad_options() -> None:
    with pytest.raises(ValueError, match="language"):
        act_policy(grids_conditioning="language")
    with pytest.raises(ValueError, match="grids_mode"):
        act_policy(grids_mode="everywhere")
    with pytest.raises(ValueError, match="grids_k"):
        act_policy(k=0)


def test_act_other_image_size_and_too_large_k() -> None:
    policy = act_policy(k=4)
    policy.forward(make_batch(size=96))  # points are continuous: a 3 x 3 map still gives 4 tokens
    assert policy.grids_last_output()[CAMERAS[0]].tokens.shape == (2, 4, 512)
    with pytest.raises(ValueError, match="oversample|exceeds|more"):
        act_policy(k=8).forward(make_batch())  # 8 points on a 2 x 2 map needs grids_allow_oversample
    assert torch.isfinite(act_policy(k=8, grids_allow_oversample=True).forward(make_batch())[0])


@pytest.mark.parametrize("options", [{"grids_mode": "random"}, {"grids_mode": "fixed-grid"},
                                     {"grids_per_camera": True, "grids_predictor": "attention"}])
def test_act_modes_run(options: dict[str, Any]) -> None:
    policy = act_policy(k=2, **options)
    loss, _ = policy.forward(make_batch())
    assert torch.isfinite(loss)


def test_smolvla_k_tokens_reach_vlm(tiny_vlm: Path) -> None:
    policy = smolvla_policy(tiny_vlm, k=16, grids_conditioning="language")
    seen: list[tuple[int, ...]] = []
    vlm = policy.model.vlm_with_expert
    dense_forward = vlm.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        embeds = kwargs["inputs_embeds"]
        seen.append(tuple(embeds[0].shape) if embeds[0] is not None else None)
        return dense_forward(*args, **kwargs)

    vlm.forward = spy
    batch = make_batch(language=True)
    loss, _ = policy.forward(batch)
    loss.backward()
    # prefix = 16 tokens per camera + 8 language tokens + 1 state token (the dense map has 64 per camera)
    assert seen[0] == (2, 16 * len(CAMERAS) + 8 + 1, 64)
    out = policy.grids_last_output()
    assert out[CAMERAS[1]].tokens.shape == (2, 16, 64)
    assert policy.grids.sampler.film.weight.grad is not None  # language + camera conditioning is trained

    policy.eval()
    with torch.no_grad():
        actions = policy.predict_action_chunk({k: v for k, v in batch.items() if not k.startswith("action")})
    assert actions.shape == (2, 5, 7)


def test_smolvla_missing_camera_keeps_identity(tiny_vlm: Path) -> None:
    policy = smolvla_policy(tiny_vlm, k=4, empty_cameras=0)
    batch = make_batch(language=True)
    del batch[CAMERAS[0]]
    policy.forward(batch)
    assert list(policy.grids_last_output()) == [CAMERAS[1]]


def _state(policy: Any) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in policy.state_dict().items()}


def test_checkpoint_round_trip(tmp_path: Path, tiny_vlm: Path) -> None:
    from lerobot_policy_grids.modeling_act_grids import ACTGridsPolicy
    from lerobot_policy_grids.modeling_smolvla_grids import SmolVLAGridsPolicy

    for policy, cls in ((act_policy(k=4), ACTGridsPolicy), (smolvla_policy(tiny_vlm, k=8), SmolVLAGridsPolicy)):
        with torch.no_grad():  # move the points away from their initial anchors so the test sees them load
            policy.grids.sampler.mlp[2].bias.add_(0.3)
        policy.save_pretrained(tmp_path / policy.name)
        loaded = cls.from_pretrained(tmp_path / policy.name)
        assert loaded.config.grids_k == policy.config.grids_k
        before, after = _state(policy), _state(loaded)
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_upstream_checkpoint_initialises_sampler_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        tiny_vlm: Path) -> None:
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from lerobot_policy_grids.modeling_act_grids import ACTGridsPolicy
    from lerobot_policy_grids.modeling_smolvla_grids import SmolVLAGridsPolicy
    from lerobot_policy_grids.offline import smolvla_offline_kwargs

    inputs, outputs = features()
    upstream = [
        (ACTPolicy(ACTConfig(input_features=inputs, output_features=outputs, **TINY_ACT)), ACTGridsPolicy),
        (SmolVLAPolicy(SmolVLAConfig(input_features=inputs, output_features=outputs,
                                     **TINY_SMOLVLA, **smolvla_offline_kwargs(tiny_vlm))), SmolVLAGridsPolicy),
    ]
    for dense, cls in upstream:
        dense.save_pretrained(tmp_path / dense.name)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lerobot_policy_grids"):
            policy = cls.from_pretrained(tmp_path / dense.name)
        text = caplog.text
        assert "freshly initialised" in text and "grids.sampler.mlp.2.bias" in text
        assert type(policy.config).__name__.endswith("GridsConfig") and policy.config.grids_k == 16
        dense_state = dense.state_dict()
        for k, v in policy.state_dict().items():
            if not k.startswith("grids."):
                assert torch.equal(v, dense_state[k]), k


def test_mismatched_checkpoints_raise(tmp_path: Path) -> None:
    from lerobot_policy_grids.modeling_act_grids import ACTGridsPolicy

    policy = act_policy(k=4)
    policy.save_pretrained(tmp_path / "k4")
    other = act_policy(k=2)
    with pytest.raises(RuntimeError, match="grids_k"):
        ACTGridsPolicy.from_pretrained(tmp_path / "k4", config=other.config)
    state = policy.state_dict()
    state["grids.unknown"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="unexpected keys"):
        act_policy(k=4).load_state_dict(state)
    partial = {k: v for k, v in policy.state_dict().items() if k != "grids.sampler.mlp.2.bias"}
    with pytest.raises(RuntimeError, match="partial GridS"):
        act_policy(k=4).load_state_dict(partial)
    per_camera = act_policy(k=4, grids_per_camera=True)
    with pytest.raises(RuntimeError):
        per_camera.load_state_dict(policy.state_dict())


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter of this environment (its ``.pth`` hooks run, nothing is imported yet)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


_ARMED = "any(type(f).__name__ == '_TorchvisionSchemaFinder' for f in sys.meta_path)"
_NMS = "torch.ops.torchvision.nms(torch.tensor([[0., 0., 1., 1.], [0., 0., 1., .9], [2., 2., 3., 3.]]), " \
    "torch.tensor([.9, .8, .7]), .5)"


def test_torchvision_shim_is_armed_exactly_where_torchvision_needs_it() -> None:
    """lerobot 0.4.4's venv holds CPU torch 2.13 beside torchvision 0.28, a CUDA-only build whose ops library does not
    load: torchvision imports only because ``setup_lerobot_env.sh`` arms the shim from a ``.pth`` file. lerobot 0.6's
    venv holds CUDA torch 2.11 and torchvision 0.26, whose ops load: no shim there (armed, it would define ``nms`` a
    second time, which aborts the interpreter)."""
    import torch

    cpu_torch = torch.version.cuda is None
    assert cpu_torch == (LEROBOT < (0, 5)), torch.__version__  # what each setup script installs
    # a fresh interpreter: is the finder armed at start-up, and gone once torchvision is imported?
    armed = _python(f"""
import sys
print({_ARMED})
import torch, torchvision, torchvision.models
resnet = torchvision.models.resnet18().eval()
print({_ARMED}, hasattr(torch.ops.torchvision, "nms"), tuple(resnet(torch.rand(1, 3, 32, 32)).shape))
try:
    print({_NMS}.tolist())
except NotImplementedError:
    print("no nms kernel")
""")
    if not cpu_torch:  # torchvision's own ops: nothing armed, and the real NMS kernel runs (box 1 overlaps box 0)
        assert armed.stdout.splitlines() == ["False", "False True (1, 1000)", "[0, 2]"], armed.stderr[-2000:]
        return
    # the shim defined the schema, then stepped aside; ResNet (what ACT uses) runs; NMS has no CPU kernel
    assert armed.stdout.splitlines() == ["True", "False True (1, 1000)", "no nms kernel"], armed.stderr[-2000:]
    by_hand = _python("""
import grids_torchvision_shim as s
s.uninstall()
try:
    import torchvision
except RuntimeError as exc:
    print(exc)
first, again = s.define_torchvision_schemas(), s.define_torchvision_schemas()
import torchvision.models
print(first, again)
""")
    # without the shim the import fails on the missing schema; defining them (once: the call is idempotent) fixes it
    assert by_hand.stdout.splitlines() == ["operator torchvision::nms does not exist", "['nms', 'qnms'] []"], \
        by_hand.stderr[-2000:]


def test_pi_types_register_on_both_lerobot_versions() -> None:
    """``pi0_grids`` / ``pi05_grids`` register on lerobot 0.4.4 too (its PI0 / PI0.5 modules import), but there
    building a policy must fail at once with the message naming the 0.6 environment (0.4.4 needs openpi's unpublished
    transformers fork); on 0.6 the same check lets construction through (``tests_py312`` builds and trains them)."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class
    from lerobot.policies.pi0.configuration_pi0 import PI0Config
    from lerobot.policies.pi05.configuration_pi05 import PI05Config

    import lerobot_policy_grids
    from lerobot_policy_grids.configuration_pi0_grids import PI0GridsConfig
    from lerobot_policy_grids.configuration_pi05_grids import PI05GridsConfig
    from lerobot_policy_grids.modeling_pi0_grids import PI0GridsPolicy, require_working_pi
    from lerobot_policy_grids.modeling_pi05_grids import PI05GridsPolicy

    pairs = {"pi0_grids": (PI0GridsConfig, PI0Config, PI0GridsPolicy),
             "pi05_grids": (PI05GridsConfig, PI05Config, PI05GridsPolicy)}
    assert set(pairs) <= set(lerobot_policy_grids.AVAILABLE_TYPES)
    for name, (cfg_cls, upstream_cls, policy_cls) in pairs.items():
        assert PreTrainedConfig.get_choice_class(name) is cfg_cls and issubclass(cfg_cls, upstream_cls)
        assert get_policy_class(name) is policy_cls
        cfg = cfg_cls(grids_k=4, grids_conditioning="language", device="cpu")
        assert cfg.type == name and cfg.grids_k == 4 and cfg.grids_conditioning == "language"
        with pytest.raises(ValueError, match="grids_conditioning"):
            cfg_cls(grids_conditioning="vision")
        with pytest.raises(ValueError, match="grids_k"):
            cfg_cls(grids_k=0)
        if LEROBOT < (0, 5):
            hint = rf"{name}: lerobot 0\.4\.\d+ needs openpi.*setup_lerobot312_env\.sh"
            with pytest.raises(RuntimeError, match=hint):
                policy_cls(cfg)
        else:
            assert require_working_pi(name) is None

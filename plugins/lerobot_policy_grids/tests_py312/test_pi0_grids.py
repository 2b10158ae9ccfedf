"""``pi0_grids`` on lerobot 0.6.x (Python 3.12), offline, with a tiny random PaliGemma + Gemma expert."""

from __future__ import annotations

from pathlib import Path

import pi_checks
import pytest
from lerobot.policies.pi0.configuration_pi0 import PI0Config
from lerobot.policies.pi0.modeling_pi0 import PI0Policy

from lerobot_policy_grids.configuration_pi0_grids import PI0GridsConfig
from lerobot_policy_grids.modeling_pi0_grids import PI0GridsPolicy

PI0 = pi_checks.Variant("pi0_grids", "pi0", PI0GridsConfig, PI0GridsPolicy, PI0Config, PI0Policy)


def test_pi0_grids_registered() -> None:
    pi_checks.check_registered(PI0)


def test_pi0_grids_listed_by_lerobot_train_help() -> None:
    pi_checks.check_train_help(PI0)


def test_pi0_grids_rejects_bad_options() -> None:
    pi_checks.check_bad_config(PI0)


def test_pi0_grids_explains_old_lerobot(monkeypatch: pytest.MonkeyPatch) -> None:
    pi_checks.check_old_lerobot_message(PI0, monkeypatch)


def test_pi0_grids_prefix_has_k_tokens_per_camera() -> None:
    pi_checks.check_prefix_tokens(PI0)


def test_pi0_grids_empty_camera_slot_is_masked() -> None:
    pi_checks.check_empty_camera(PI0)


def test_pi0_grids_training_steps_reach_the_sampler() -> None:
    pi_checks.check_training(PI0)


def test_pi0_grids_gradient_checkpointing_matches_plain_training() -> None:
    pi_checks.check_gradient_checkpointing(PI0)


def test_pi0_grids_select_action() -> None:
    pi_checks.check_select_action(PI0)


def test_pi0_grids_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    pi_checks.check_round_trip(PI0, tmp_path)


def test_pi0_grids_loads_upstream_pi0_checkpoint_with_announced_fresh_sampler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pi_checks.check_upstream_checkpoint(PI0, tmp_path, caplog)


def test_pi0_grids_mismatched_checkpoint_raises(tmp_path: Path) -> None:
    pi_checks.check_mismatched_checkpoint(PI0, tmp_path)


def test_pi0_grids_broken_upstream_checkpoint_raises(tmp_path: Path) -> None:
    pi_checks.check_broken_upstream_checkpoint(PI0, tmp_path)


def test_pi0_grids_per_camera_language_and_bfloat16_options() -> None:
    pi_checks.check_options(PI0)

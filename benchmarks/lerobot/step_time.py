"""Training-step time of dense SmolVLA vs ``smolvla_grids`` (K=16) at SmolVLA's real size, on CPU.

Both policies are built offline with random weights from the same local SmolVLM2-500M-shaped config
(:func:`lerobot_policy_grids.offline.write_local_smolvlm` with ``size="real"``: SigLIP 12 x 768 at 512 px, 64 tokens
x 960 per camera, the first 16 of 32 text layers, action expert at 0.75 width) and SmolVLA's defaults (frozen vision
encoder, expert-only training, chunk 50). One step = forward + backward + AdamW step on a random batch with two
cameras, an 8-D state and a 16-token instruction. Dense and GridS steps alternate (after one warm-up step each), so
both see the same machine load; the median is reported. Run it in ``.venv-lerobot``::

    OMP_NUM_THREADS=2 .venv-lerobot/bin/python benchmarks/lerobot/step_time.py --threads 2 --steps 3

Small-scale: a few steps on a shared CPU, meant for the ratio, not for absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
CAMERAS = ("observation.images.image", "observation.images.wrist_image")


def build(kind: str, vlm_dir: Path, k: int) -> Any:
    """A SmolVLA (``dense``) or SmolVLA + GridS policy with SmolVLA's default sizes, random weights."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot_policy_grids.configuration_smolvla_grids import SmolVLAGridsConfig
    from lerobot_policy_grids.modeling_smolvla_grids import SmolVLAGridsPolicy
    from lerobot_policy_grids.offline import smolvla_offline_kwargs

    inputs = {cam: PolicyFeature(FeatureType.VISUAL, (3, 256, 256)) for cam in CAMERAS}
    inputs["observation.state"] = PolicyFeature(FeatureType.STATE, (8,))
    outputs = {"action": PolicyFeature(FeatureType.ACTION, (7,))}
    kwargs = {"input_features": inputs, "output_features": outputs, "device": "cpu", **smolvla_offline_kwargs(vlm_dir)}
    torch.manual_seed(0)
    if kind == "dense":
        return SmolVLAPolicy(SmolVLAConfig(**kwargs))
    return SmolVLAGridsPolicy(SmolVLAGridsConfig(grids_k=k, **kwargs))


def make_batch(policy: Any, batch_size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch_size)
    chunk = policy.config.chunk_size
    batch = {cam: torch.rand(batch_size, 3, 256, 256, generator=g) for cam in CAMERAS}
    batch["observation.state"] = torch.randn(batch_size, 8, generator=g)
    batch["action"] = torch.randn(batch_size, chunk, 7, generator=g)
    batch["action_is_pad"] = torch.zeros(batch_size, chunk, dtype=torch.bool)
    batch["observation.language.tokens"] = torch.randint(10, 400, (batch_size, 16), generator=g)
    batch["observation.language.attention_mask"] = torch.ones(batch_size, 16, dtype=torch.bool)
    return batch


def prefix_length(policy: Any, batch: dict[str, torch.Tensor]) -> int:
    """Tokens the VLM prefix holds for this batch (images + language + state), read from embed_prefix."""
    images, img_masks = policy.prepare_images(batch)
    state = policy.prepare_state(batch)
    with torch.no_grad():
        embs, _, _ = policy.model.embed_prefix(
            images, img_masks, batch["observation.language.tokens"], batch["observation.language.attention_mask"],
            state=state,
        )
    return int(embs.shape[1])


def train_step(policy: Any, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    loss, _ = policy.forward(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per policy and batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--out", type=Path, default=HERE / "step_time.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from lerobot_policy_grids.offline import write_local_smolvlm

    results: dict[str, Any] = {
        "threads": args.threads,
        "k": args.k,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": os.getloadavg(),  # 1/5/15-min load averages: how shared the machine was
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        vlm_dir = write_local_smolvlm(Path(tmp) / "smolvlm_real", "real")
        policies = {"dense": build("dense", vlm_dir, args.k), f"grids_k{args.k}": build("grids", vlm_dir, args.k)}
    optimizers = {}
    for name, policy in policies.items():
        policy.train()
        trainable = [p for p in policy.parameters() if p.requires_grad]
        optimizers[name] = torch.optim.AdamW(trainable, lr=1e-4)
        results[f"params_{name}"] = sum(p.numel() for p in policy.parameters())
        results[f"trainable_{name}"] = sum(p.numel() for p in trainable)
    for bs in args.batch_sizes:
        batch = make_batch(policies["dense"], bs)
        times: dict[str, list[float]] = {name: [] for name in policies}
        for name, policy in policies.items():  # warm-up (allocator, lazy init); not timed
            train_step(policy, optimizers[name], batch)
        for _ in range(args.steps):
            for name, policy in policies.items():
                times[name].append(train_step(policy, optimizers[name], batch))
        row = {"batch_size": bs}
        for name, policy in policies.items():
            row[f"{name}_s"] = statistics.median(times[name])
            row[f"{name}_all_s"] = times[name]
            row[f"{name}_prefix_tokens"] = prefix_length(policy, batch)
        row["speedup"] = row["dense_s"] / row[f"grids_k{args.k}_s"]
        row["loadavg"] = os.getloadavg()
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
        write_outputs(results, args.out)  # after every batch size, so a run cut short keeps what it measured


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """Write the JSON and a Markdown table next to it (atomically)."""
    k = results["k"]
    lines = [
        f"| batch | dense SmolVLA s/step | smolvla_grids K={k} s/step | speed-up | prefix tokens dense / GridS | "
        "load avg (1 min) after |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['batch_size']} | {r['dense_s']:.2f} | {r[f'grids_k{k}_s']:.2f} | {r['speedup']:.2f}x | "
            f"{r['dense_prefix_tokens']} / {r[f'grids_k{k}_prefix_tokens']} | {r['loadavg'][0]:.1f} |"
        )
    lines.append("")
    extra = (results[f"params_grids_k{k}"] - results["params_dense"]) / 1e6
    lines.append(
        f"torch {results['torch']}, {results['threads']} thread(s), {results['cpu_count']} logical CPUs shared with "
        f"other jobs; parameters dense {results['params_dense'] / 1e6:.1f} M (trainable "
        f"{results['trainable_dense'] / 1e6:.1f} M), GridS adds {extra:.2f} M; load average at start "
        f"{results['loadavg_start'][0]:.1f} (1 min) / {results['loadavg_start'][1]:.1f} (5 min)."
    )
    for path, text in ((out, json.dumps(results, indent=2)), (out.with_suffix(".md"), "\n".join(lines) + "\n")):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

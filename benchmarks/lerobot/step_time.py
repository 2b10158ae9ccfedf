"""Training-step and ``select_action`` time of dense SmolVLA vs ``smolvla_grids`` at SmolVLA's real size, on CPU.

Policies, side by side in one process (all built offline with random weights from the same local
SmolVLM2-500M-shaped config, :func:`lerobot_policy_grids.offline.write_local_smolvlm` with ``size="real"``: SigLIP
12 x 768 at 512 px = 1024 patch tokens per camera, a pixel-shuffle connector to 64 tokens x 960, the first 16 of 32
text layers, action expert at 0.75 width; SmolVLA's defaults: frozen vision encoder, expert-only training, chunk 50,
10 denoising steps):

* ``dense``: upstream SmolVLA;
* ``grids_k{K}``: ``smolvla_grids``, GridS after the connector (the paper's placement, ``grids_after_layer=None``);
* ``grids_k{K}_L{L}``: ``smolvla_grids`` with ``grids_after_layer=L`` (``grids_connector="neighbourhood"``, the
  default): the patch map entering SigLIP layer ``L`` is resampled to K points x a 4 x 4 neighbourhood each (16 K
  tokens), layers ``L..11`` run on those, and the unchanged connector turns each neighbourhood into one token;
* ``grids_k{K}_L{L}_point`` (only with ``--point-layers``): ``grids_after_layer=L``, ``grids_connector="point"``:
  one token per point, so layers ``L..11`` run on K tokens, and each enters the connector as a uniform 4 x 4 block
  (the connector's weight summed over its 16 slots).

All policies share one copy of the upstream weights (same values, so the comparison is like for like and the
machine's memory holds five real-size policies); each has its own optimizer state. Two cameras, an 8-D state and a
16-token instruction. ``train``: forward + backward + AdamW step on a random batch. ``select_action``: a fresh chunk
per call (``reset()`` first), the whole flow-matching inference, under ``torch.no_grad``. After one untimed call
each, the policies take turns call by call, so all see the same machine load; medians are reported, with the
speed-up against ``dense`` from the same rounds. Run it in ``.venv-lerobot``::

    OMP_NUM_THREADS=1 nice .venv-lerobot/bin/python benchmarks/lerobot/step_time.py --threads 1 --steps 3 \
      --after-layers 0 4 8 --point-layers 0 4 8

``--size tiny`` runs the same on the test-sized SmolVLM in seconds (a check of the script, not a measurement; give it
``--out`` somewhere else than the default, which holds the measured real-size results).
Small-scale: a few calls on a shared CPU, meant for the ratios, not for absolute numbers.
"""

from __future__ import annotations

import argparse
import datetime
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
MODES = ("train", "select_action")


def build(
    vlm_dir: Path, image_size: int, k: int | None, after_layer: int | None, connector: str = "neighbourhood"
) -> Any:
    """Upstream SmolVLA (``k=None``) or SmolVLA + GridS, SmolVLA's default sizes, random weights."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot_policy_grids.configuration_smolvla_grids import SmolVLAGridsConfig
    from lerobot_policy_grids.modeling_smolvla_grids import SmolVLAGridsPolicy
    from lerobot_policy_grids.offline import smolvla_offline_kwargs

    inputs = {cam: PolicyFeature(FeatureType.VISUAL, (3, image_size, image_size)) for cam in CAMERAS}
    inputs["observation.state"] = PolicyFeature(FeatureType.STATE, (8,))
    outputs = {"action": PolicyFeature(FeatureType.ACTION, (7,))}
    kwargs = {"input_features": inputs, "output_features": outputs, "device": "cpu", **smolvla_offline_kwargs(vlm_dir)}
    torch.manual_seed(0)
    if k is None:
        return SmolVLAPolicy(SmolVLAConfig(**kwargs))
    return SmolVLAGridsPolicy(
        SmolVLAGridsConfig(grids_k=k, grids_after_layer=after_layer, grids_connector=connector, **kwargs)
    )


def share_weights(policy: Any, reference: Any) -> int:
    """Point every parameter and buffer of ``policy`` that ``reference`` also has at ``reference``'s storage."""
    ref = dict(reference.named_parameters())
    ref.update(dict(reference.named_buffers()))
    shared = 0
    for name, tensor in [*policy.named_parameters(), *policy.named_buffers()]:
        other = ref.get(name)
        if other is not None and other.shape == tensor.shape and other.dtype == tensor.dtype:
            tensor.data = other.data
            shared += 1
    return shared


def make_batch(policy: Any, batch_size: int, image_size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch_size)
    chunk = policy.config.chunk_size
    batch = {cam: torch.rand(batch_size, 3, image_size, image_size, generator=g) for cam in CAMERAS}
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


def vision_tokens(policy: Any, batch: dict[str, torch.Tensor]) -> list[int]:
    """Tokens entering each SigLIP layer for one camera of this batch."""
    seen: list[int] = []
    layers = policy.model.vlm_with_expert.get_vlm_model().vision_model.encoder.layers
    handles = [layer.register_forward_pre_hook(lambda m, args: seen.append(int(args[0].shape[1]))) for layer in layers]
    try:
        prefix_length(policy, batch)
    finally:
        for handle in handles:
            handle.remove()
    return seen[: len(layers)]


def train_step(policy: Any, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> float:
    policy.train()
    start = time.perf_counter()
    loss, _ = policy.forward(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def select_action(policy: Any, batch: dict[str, torch.Tensor]) -> float:
    policy.eval()
    policy.reset()  # so that every call predicts a new chunk
    start = time.perf_counter()
    with torch.no_grad():
        policy.select_action(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed calls per policy, mode and batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--after-layers", type=int, nargs="*", default=[0, 4, 8],
                        help="grids_after_layer values to time beside the post-connector placement "
                        "(grids_connector='neighbourhood': 16 K tokens in the later SigLIP layers)")
    parser.add_argument("--point-layers", type=int, nargs="*", default=[],
                        help="grids_after_layer values to time with grids_connector='point' (K tokens in the later "
                        "SigLIP layers); none by default")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--size", choices=("real", "tiny"), default="real")
    parser.add_argument("--out", type=Path, default=HERE / "step_time.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from lerobot_policy_grids.offline import SMOLVLM_SIZES, write_local_smolvlm

    image_size = SMOLVLM_SIZES[args.size]["vision"]["image_size"]
    results: dict[str, Any] = {
        "command": "benchmarks/lerobot/step_time.py " + " ".join(
            [f"--threads {args.threads}", f"--steps {args.steps}", "--batch-sizes", *map(str, args.batch_sizes),
             f"--k {args.k}", "--after-layers", *map(str, args.after_layers),
             *(["--point-layers", *map(str, args.point_layers)] if args.point_layers else []), "--modes", *args.modes,
             f"--size {args.size}"]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "size": args.size,
        "threads": args.threads,
        "steps": args.steps,
        "k": args.k,
        "after_layers": args.after_layers,
        "point_layers": args.point_layers,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": os.getloadavg(),  # 1/5/15-min load averages: how shared the machine was
        "rows": [],
    }
    # name -> (grids_k, grids_after_layer, grids_connector)
    specs: dict[str, tuple[int | None, int | None, str]] = {
        "dense": (None, None, "neighbourhood"), f"grids_k{args.k}": (args.k, None, "neighbourhood")
    }
    specs.update({f"grids_k{args.k}_L{layer}": (args.k, layer, "neighbourhood") for layer in args.after_layers})
    specs.update({f"grids_k{args.k}_L{layer}_point": (args.k, layer, "point") for layer in args.point_layers})
    policies: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        vlm_dir = write_local_smolvlm(Path(tmp) / f"smolvlm_{args.size}", args.size)
        for name, spec in specs.items():
            policies[name] = build(vlm_dir, image_size, *spec)
            if name != "dense":
                share_weights(policies[name], policies["dense"])
    optimizers = {}
    probe = make_batch(policies["dense"], 1, image_size)
    results["policies"] = {}
    for name, policy in policies.items():
        trainable = [p for p in policy.parameters() if p.requires_grad]
        optimizers[name] = torch.optim.AdamW(trainable, lr=1e-4)
        results["policies"][name] = {
            "after_layer": specs[name][1],
            "connector": specs[name][2],
            "params": sum(p.numel() for p in policy.parameters()),
            "trainable": sum(p.numel() for p in trainable),
            "prefix_tokens": prefix_length(policy, probe),
            "vision_tokens_per_layer": vision_tokens(policy, probe),
        }
    for bs in args.batch_sizes:
        batch = make_batch(policies["dense"], bs, image_size)
        obs = {key: v for key, v in batch.items() if not key.startswith("action")}
        for mode in args.modes:
            def call(name: str, policy: Any, mode: str = mode, batch: dict = batch, obs: dict = obs) -> float:
                return train_step(policy, optimizers[name], batch) if mode == "train" else select_action(policy, obs)

            times: dict[str, list[float]] = {name: [] for name in policies}
            for name, policy in policies.items():  # warm-up (allocator, lazy init, optimizer state); not timed
                call(name, policy)
            for _ in range(args.steps):
                for name, policy in policies.items():
                    times[name].append(call(name, policy))
            row: dict[str, Any] = {"mode": mode, "batch_size": bs, "seconds": {}, "all_seconds": times,
                                   "speedup": {}}
            for name in policies:
                row["seconds"][name] = statistics.median(times[name])
                row["speedup"][name] = row["seconds"]["dense"] / row["seconds"][name]
            row["loadavg"] = os.getloadavg()
            results["rows"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "all_seconds"}), flush=True)
            write_outputs(results, args.out)  # after every row, so a run cut short keeps what it measured


def label(name: str, info: dict[str, Any], k: int) -> str:
    if name == "dense":
        return "dense SmolVLA"
    if info["after_layer"] is None:
        return f"GridS K={k} after connector"
    if info.get("connector") == "point":
        return f"GridS K={k} in encoder, one token per point, L={info['after_layer']}"
    return f"GridS K={k} in encoder, L={info['after_layer']}"


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """Write the JSON and a Markdown table next to it (atomically)."""
    k, policies = results["k"], results["policies"]
    names = list(policies)
    lines = [
        "| mode | batch | " + " | ".join(label(n, policies[n], k) for n in names) + " | load avg (1 min) after |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for r in results["rows"]:
        cells = [f"{r['seconds'][n]:.2f} s" + ("" if n == "dense" else f" (**{r['speedup'][n]:.2f}x**)")
                 for n in names]
        lines.append(f"| {r['mode']} | {r['batch_size']} | " + " | ".join(cells) + f" | {r['loadavg'][0]:.1f} |")
    lines += [
        "| prefix tokens (2 cameras + 16 language + state) | | "
        + " | ".join(str(policies[n]["prefix_tokens"]) for n in names) + " | |",
        f"| SigLIP tokens per camera, layers 0-{len(policies['dense']['vision_tokens_per_layer']) - 1} | | "
        + " | ".join(_runs(policies[n]["vision_tokens_per_layer"]) for n in names) + " | |",
        "",
    ]
    dense = policies["dense"]
    extra = {n: (policies[n]["params"] - dense["params"]) / 1e6 for n in names if n != "dense"}
    lines.append(
        f"{results['date']}, `{results['command']}`; {results['size']} size, random weights; torch "
        f"{results['torch']}, {results['threads']} thread(s), {results['cpu_count']} logical CPUs shared with other "
        f"jobs (load average at start {results['loadavg_start'][0]:.1f} / {results['loadavg_start'][1]:.1f}, 1 / 5 "
        f"min); medians of {results['steps']} calls per cell, policies taking turns; parameters dense "
        f"{dense['params'] / 1e6:.1f} M (trainable {dense['trainable'] / 1e6:.1f} M), GridS adds "
        + ", ".join(f"{v:.2f} M ({label(n, policies[n], k)})" for n, v in extra.items()) + "."
    )
    for path, text in ((out, json.dumps(results, indent=2)), (out.with_suffix(".md"), "\n".join(lines) + "\n")):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    print("\n".join(lines))


def _runs(values: list[int]) -> str:
    """``[1024, 1024, 256]`` -> ``1024 x2, 256``."""
    out: list[str] = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return ", ".join(f"{v}" + (f" x{n}" if n > 1 else "") for v, n in out)


if __name__ == "__main__":
    main()

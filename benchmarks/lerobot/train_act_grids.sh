#!/usr/bin/env bash
# Small-scale real-data run: export 2 libero_object tasks (generated demos, 128 px) to a local LeRobotDataset and
# train a small act_grids (K=4 tokens per camera instead of 4 x 4 = 16) for 300 steps on CPU through lerobot-train.
# Needs .venv-lerobot (scripts/setup_lerobot_env.sh) and finished runs/libero/data/libero_object/*_demo.hdf5 files.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${LEROBOT_VENV:-.venv-lerobot}"
DATA="${DATA:-runs/libero/data/libero_object}"
ROOT="${ROOT:-runs/lerobot/libero_object_2tasks}"
OUT="${OUT:-runs/lerobot/act_grids_k4}"
STEPS="${STEPS:-300}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 WANDB_MODE=disabled
if [ ! -f "$ROOT/meta/info.json" ]; then
  "$VENV/bin/grids-vla" data export-lerobot --data "$DATA" --out "$ROOT" --repo-id local/libero_object_2tasks \
    --max-tasks 2
fi
rm -rf "$OUT"
"$VENV/bin/lerobot-train" --dataset.repo_id=local/libero_object_2tasks --dataset.root="$ROOT" \
  --policy.type=act_grids --policy.grids_k=4 --policy.push_to_hub=false --policy.device=cpu \
  --policy.pretrained_backbone_weights=null --policy.dim_model=256 --policy.n_heads=8 --policy.dim_feedforward=1024 \
  --policy.n_encoder_layers=2 --policy.n_decoder_layers=1 --policy.chunk_size=20 --policy.n_action_steps=20 \
  --batch_size=8 --steps="$STEPS" --num_workers=0 --log_freq=5 --save_freq="$STEPS" --eval_freq=0 \
  --wandb.enable=false --seed=0 --output_dir="$OUT" 2>&1 | tee "$OUT.log"
"$VENV/bin/python" benchmarks/lerobot/loss_curve.py "$OUT.log" --out benchmarks/lerobot/act_grids_k4_loss

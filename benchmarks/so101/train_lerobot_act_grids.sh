#!/usr/bin/env bash
# The LeRobot path on the simulated SO-101, small: scripted-expert demos of one task (grids-vla data so101), exported
# as a local LeRobotDataset, a small act_grids (K=4 of ACT's 4 x 4 = 16 tokens per 128 px camera) trained with
# lerobot-train on CPU, then evaluated in held-out in-distribution scenes and in the 21 OOD scenes
# (python -m lerobot_policy_grids.so101 eval). Needs .venv-lerobot312 (scripts/setup_lerobot312_env.sh, which
# installs grids-vla's so101 extra). Every stage resumes or is skipped when its output is there; the defaults take
# well over an hour on 2 CPU cores, so scale them down (e.g. DEMOS=2 STEPS=2 EVAL_EPISODES=1 OOD_EPISODES=1 MAX_STEPS=20 for a
# smoke run of a few minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${LEROBOT312_VENV:-.venv-lerobot312}"
TASK="${TASK:-pick_place_bowl}"
DEMOS="${DEMOS:-100}"
STEPS="${STEPS:-5000}"
EVAL_EPISODES="${EVAL_EPISODES:-50}"
OOD_EPISODES="${OOD_EPISODES:-21}"
MAX_STEPS="${MAX_STEPS:-}"
RUNS="${RUNS:-runs/so101_lerobot}"
DATA="$RUNS/data"
ROOT="$RUNS/lerobot/$TASK"
OUT="$RUNS/act_grids_k4_$TASK"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 WANDB_MODE=disabled
export MUJOCO_GL="${MUJOCO_GL:-egl}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-${MUJOCO_GL:-egl}}"

"$VENV/bin/grids-vla" data so101 --task "$TASK" --episodes "$DEMOS" --out "$DATA"
if [ ! -f "$ROOT/meta/info.json" ]; then
  "$VENV/bin/python" -m lerobot_policy_grids.so101 export --data "$DATA/$TASK" --out "$ROOT" \
    --repo-id "local/so101_$TASK"
fi
if [ ! -f "$OUT/checkpoints/last/pretrained_model/model.safetensors" ]; then
  rm -rf "$OUT"
  mkdir -p "$(dirname "$OUT")"
  "$VENV/bin/lerobot-train" --dataset.repo_id="local/so101_$TASK" --dataset.root="$ROOT" \
    --policy.type=act_grids --policy.grids_k=4 --policy.push_to_hub=false --policy.device=cpu \
    --policy.pretrained_backbone_weights=null --policy.dim_model=256 --policy.n_heads=8 --policy.dim_feedforward=1024 \
    --policy.n_encoder_layers=2 --policy.n_decoder_layers=1 --policy.chunk_size=20 --policy.n_action_steps=10 \
    --batch_size=8 --steps="$STEPS" --num_workers=0 --log_freq=50 --save_freq="$STEPS" --env_eval_freq=0 \
    --wandb.enable=false --seed=0 --output_dir="$OUT" 2>&1 | tee "$OUT.log"
fi
LIMIT=()
if [ -n "$MAX_STEPS" ]; then LIMIT=(--max-steps "$MAX_STEPS"); fi
"$VENV/bin/python" -m lerobot_policy_grids.so101 eval --policy-path "$OUT" --task "$TASK" --scenes in \
  --episodes "$EVAL_EPISODES" --video 2 "${LIMIT[@]}" --out "$OUT/eval_in"
"$VENV/bin/python" -m lerobot_policy_grids.so101 eval --policy-path "$OUT" --task "$TASK" --scenes ood \
  --episodes "$OOD_EPISODES" --video 2 "${LIMIT[@]}" --out "$OUT/eval_ood"

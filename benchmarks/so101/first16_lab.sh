#!/bin/bash
# Can a point head learn the first move? The first-16-frames setting of benchmarks/so101/RESULTS.md ("The first move
# needs a loss that weighs it"): 200 bowl demos cut to their first 16 frames, where half the frames need the cube's
# position, 1000 steps, seed 0, state dropped, squared-error head. The paper's pooled GridS-16 learned the first move
# there by step 1000 (reach probe y corr 0.53 / 0.60); in the full SO-101 study every attention head failed to. Each
# head is trained the same way and probed the same way, in 12 minutes instead of the study's 50.
#
#     MUJOCO_GL=egl OMP_NUM_THREADS=2 bash benchmarks/so101/first16_lab.sh [NAME ...]
#
# Resumable: a head whose probes are archived is skipped, a training run with a checkpoint resumes. Runs go to
# runs/so101/first16_lab/NAME, the probes and training records to benchmarks/so101/pilot/first16_lab/NAME.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
DATA=runs/so101/first16
RUNS=runs/so101/first16_lab
ARCHIVE=benchmarks/so101/pilot/first16_lab

declare -A FLAGS=(
  [pooled]=""
  [fixed]="--reducer-kwargs {\"coords\":\"fixed-grid\"}"
  [nogeom]="--reducer-kwargs {\"geometry\":false}"
  [fixed-ctx]="--reducer-kwargs {\"coords\":\"fixed-grid\",\"context\":true}"
  [attn-lr30-ctx]="--predictor attention --points-lr-scale 30 --reducer-kwargs {\"context\":true}"
  [attn]="--predictor attention"
  [attn-lr30]="--predictor attention --points-lr-scale 30"
  [attn-lr30-stem-lang]="--predictor attention --points-lr-scale 30 --point-features stem --cond-on-language"
  [l0]="--after-layer 0"
  [l0-attn-lr30-stem-lang]="--after-layer 0 --predictor attention --points-lr-scale 30 --point-features stem --cond-on-language"
)
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(pooled fixed nogeom fixed-ctx attn-lr30 attn-lr30-ctx attn-lr30-stem-lang l0 l0-attn-lr30-stem-lang)
for name in "${NAMES[@]}"; do
  [ -n "${FLAGS[$name]+set}" ] || { echo "first16_lab.sh: unknown head '$name'; expected one of: ${!FLAGS[*]}" >&2; exit 2; }
done

[ -d "$DATA/pick_place_bowl" ] || $PY benchmarks/so101/first_moves.py cut --data runs/so101/data/pick_place_bowl \
    --frames 16 --out "$DATA/pick_place_bowl"

for name in "${NAMES[@]}"; do
  out="$ARCHIVE/$name"
  if [ -f "$out/reach_probe.json" ] && [ -f "$out/fit.json" ]; then echo "== $name: probed earlier"; continue; fi
  run="$RUNS/$name"
  resume=()
  [ -d "$run/checkpoints" ] && resume=(--resume latest)
  echo "== train $name"
  # shellcheck disable=SC2086  # FLAGS holds several flags
  $PY -m grids_vla.cli train --data "$DATA" --out "$run" --steps 1000 --batch-size 32 --lr 3e-4 --seed 0 \
      --save-every 250 --reducer grids --k 16 --action-dim 4 --vision-stem coordconv --state-dropout 1.0 \
      --action-head l2 ${FLAGS[$name]} "${resume[@]}"
  mkdir -p "$out"
  cp "$run/metrics.csv" "$run/train_config.json" "$out/"
  $PY benchmarks/so101/first_moves.py fit --checkpoint "$run" --data runs/so101/data/pick_place_bowl \
      --out "$out/fit.json"
  $PY benchmarks/so101/token_probe.py --checkpoint "$run" --out "$out/token_probe.json"
  $PY benchmarks/so101/reach_probe.py --checkpoint "$run" --scenes 50 --out "$out/reach_probe.json"
done

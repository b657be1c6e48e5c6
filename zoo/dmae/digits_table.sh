#!/usr/bin/env bash
# Reproduces the fine-tuning table of zoo/dmae/RESULTS.md on digits (ViT-Tiny/4 shrunk to 2 blocks of width 96 for CPU):
# no pre-training vs MAE vs DMAE (teacher: a width-192 MAE, trained once with seed 0) vs further pre-training
# with self-distillation (original model = the MAE run of the same seed). Usage: zoo/dmae/digits_table.sh [seeds...]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/repr_table}
SEEDS=${*:-0 1 2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
run() { $PY tools/train.py "$@" overwrite=true; }
run --config zoo/dmae/digits_teacher_mae_small.yaml --set seed=0 output=$OUT/teacher
for s in $SEEDS; do
  run --config zoo/mae/digits_vit_tiny.yaml --set seed=$s output=$OUT/mae_s$s
  run --config zoo/dmae/digits_vit_tiny.yaml --set seed=$s output=$OUT/dmae_s$s \
      method.teacher_checkpoint=$OUT/teacher/model.safetensors
  run --config zoo/further_pretrain_sd/digits_vit_tiny.yaml --set seed=$s output=$OUT/fpsd_s$s \
      model.checkpoint=$OUT/mae_s$s/model.safetensors
  run --config zoo/mae/digits_finetune.yaml --set seed=$s output=$OUT/ft_none_s$s
  for pre in mae dmae fpsd; do
    run --config zoo/mae/digits_finetune.yaml --set seed=$s output=$OUT/ft_${pre}_s$s \
        model.checkpoint=$OUT/${pre}_s$s/model.safetensors
  done
done

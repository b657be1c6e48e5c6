#!/usr/bin/env bash
# Reproduces the fine-tuning table of zoo/dmae/RESULTS.md on digits (ViT-Tiny/4 shrunk to 2 blocks of width 96 for CPU):
# no pre-training vs MAE vs DMAE (teacher: a width-192 MAE, trained once with seed 0 and shared by every seed) vs
# further pre-training with self-distillation (original model = the MAE run of the same seed).
# Every pre-training: 20 epochs; every fine-tune: 30 epochs (zoo/mae/digits_finetune.yaml).
#
# Usage: zoo/dmae/digits_table.sh [seeds...]     (default: 0 1 2, one after the other)
#        zoo/dmae/digits_table.sh teacher        (only the shared DMAE teacher)
# The teacher is trained only when $OUT/teacher/model.safetensors is missing, so seeds can run in parallel once it
# exists:  zoo/dmae/digits_table.sh teacher && for s in 0 1 2; do zoo/dmae/digits_table.sh $s & done; wait
# The CPU time of every run is appended to $OUT/times.txt (GNU time, when /usr/bin/time exists).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/repr_table2}
if [ $# -eq 0 ]; then SEEDS="0 1 2"; else SEEDS="$*"; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
run() {  # run <name> <train.py args...>
  local name=$1; shift
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -a -o "$OUT/times.txt" -f "$name cpu_s=%U+%S wall_s=%e" \
      $PY tools/train.py "$@" output="$OUT/$name" overwrite=true
  else
    $PY tools/train.py "$@" output="$OUT/$name" overwrite=true
  fi
}
if [ ! -f "$OUT/teacher/model.safetensors" ]; then
  run teacher --config zoo/dmae/digits_teacher_mae_small.yaml --set seed=0
fi
[ "$SEEDS" = teacher ] && exit 0
for s in $SEEDS; do
  run mae_s$s --config zoo/mae/digits_vit_tiny.yaml --set seed=$s
  run dmae_s$s --config zoo/dmae/digits_vit_tiny.yaml --set seed=$s \
      method.teacher_checkpoint=$OUT/teacher/model.safetensors
  run fpsd_s$s --config zoo/further_pretrain_sd/digits_vit_tiny.yaml --set seed=$s \
      model.checkpoint=$OUT/mae_s$s/model.safetensors
  run ft_none_s$s --config zoo/mae/digits_finetune.yaml --set seed=$s
  for pre in mae dmae fpsd; do
    run ft_${pre}_s$s --config zoo/mae/digits_finetune.yaml --set seed=$s \
        model.checkpoint=$OUT/${pre}_s$s/model.safetensors
  done
done

#!/usr/bin/env bash
# Pilot of issue 23 point 3: CiteSeer 2-way 5-shot, the paper's class split (seed 1234), 5 paired runs
# (seed 0: same initial weights, episodes and 100 fixed test tasks in both settings), four methods,
# transductive and inductive. TLP-DGI with --pretrain-epochs 100 (default 300) to fit a ~15 CPU-minute budget.
# Usage: bash docs/results/inductive-pilot/run.sh OUT_DIR
set -euo pipefail
OUT=${1:?give an output folder}
for setting in transductive inductive; do
  for method in gmeta maml protonet tlp; do
    extra=()
    [ "$method" = tlp ] && extra=(--pretrain dgi --pretrain-epochs 100)
    start=$(date +%s)
    gnn-cml train --graph citeseer --method "$method" --ways 2 --shots 5 --runs 5 --setting "$setting" \
      "${extra[@]}" --no-progress --out "$OUT/$method-$setting" > /dev/null
    echo "$method $setting $(( $(date +%s) - start )) s"
  done
done

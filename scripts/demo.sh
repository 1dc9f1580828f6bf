#!/usr/bin/env bash
# The main job, end to end on EmoDB (called by `make demo` after the venv is ready):
#   1. build EmoDB with TFDS and cache its log filter-bank features,
#   2. train the CE teacher, then the DKD student (speaker-independent: speaker 03 held out),
#   3. evaluate the student on the held-out speaker and predict a few files,
#   4. export the student for TF Serving.
# Everything lands in $DEMO_DIR (default runs/demo). Rerunning is safe: a finished run is
# reported as is, an interrupted one resumes from its last completed epoch (a run made with
# other options is refused: set DEMO_DIR elsewhere or delete it). DEMO_EPOCHS scales the run
# (default 40, the default recipe's budget; the paper uses 50). The default recipe perturbs
# training segments (frequency warping), so the student phase runs the teacher on every batch.
# EmoDB is found, in this order: $KERAS_DKD_EMODB_DIR, then ../shared/data/emodb beside the
# repository; with neither, the EmoDB builder downloads the official archive.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
if [ -z "${KERAS_DKD_EMODB_DIR:-}" ] && [ -d ../shared/data/emodb/wav ]; then
  export KERAS_DKD_EMODB_DIR="$(cd ../shared/data/emodb && pwd)"
fi
export KERAS_BACKEND=${KERAS_BACKEND:-torch}
DEMO_DIR=${DEMO_DIR:-runs/demo}
DEMO_EPOCHS=${DEMO_EPOCHS:-40}
# DKD's warm-up (20 of the paper's 50 epochs), scaled to the demo's epochs.
WARMUP=$(( DEMO_EPOCHS * 2 / 5 ))
FOLD=${DEMO_FOLD:-speaker03}
DATA=(--dataset emodb --protocol loso --fold "$FOLD")

start=$(date +%s)
step() { printf '\n=== %s  (%ss)\n' "$1" "$(( $(date +%s) - start ))"; }

step "environment"
keras-dkd info

step "1. dataset: build EmoDB (TFDS) and cache features"
keras-dkd prepare --dataset emodb

step "2. train: CE teacher, then DKD student -> $DEMO_DIR"
keras-dkd train "${DATA[@]}" --recipe "${DEMO_RECIPE:-default}" --epochs "$DEMO_EPOCHS" \
  --warmup-epochs "$WARMUP" --out "$DEMO_DIR"

step "3. evaluate the student on the held-out speaker"
# A model in a run directory is evaluated on that run's held-out split by default.
keras-dkd evaluate "$DEMO_DIR/student.keras"

step "   predict a few files"
if [ -n "${KERAS_DKD_EMODB_DIR:-}" ]; then
  keras-dkd predict "$DEMO_DIR/student.keras" \
    "$KERAS_DKD_EMODB_DIR"/wav/03a01Wa.wav "$KERAS_DKD_EMODB_DIR"/wav/03a01Fa.wav \
    "$KERAS_DKD_EMODB_DIR"/wav/03a02Ta.wav "$KERAS_DKD_EMODB_DIR"/wav/03a01Nc.wav
fi

step "4. export"
# TF Serving's versioned layout: $DEMO_DIR/export/1 (replaced on a rerun, atomically).
keras-dkd export "$DEMO_DIR/student.keras" "$DEMO_DIR/export" --version 1 --overwrite

step "done: $DEMO_DIR"
ls -la "$DEMO_DIR"

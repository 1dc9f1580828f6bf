#!/usr/bin/env bash
# The main job, end to end on EmoDB (called by `make demo` after the venv is ready).
# EmoDB is found, in this order: $KERAS_DKD_EMODB_DIR, then ../shared/data/emodb beside the
# repository; with neither, the EmoDB builder downloads the official archive.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
if [ -z "${KERAS_DKD_EMODB_DIR:-}" ] && [ -d ../shared/data/emodb/wav ]; then
  export KERAS_DKD_EMODB_DIR="$(cd ../shared/data/emodb && pwd)"
fi
keras-dkd --help
keras-dkd info

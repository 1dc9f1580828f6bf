#!/usr/bin/env bash
# Issue 16's GPU check as one command: benchmarks/throughput.py per Keras backend at batch 32 and
# 256, float32 and mixed_bfloat16, against plain PyTorch on the same GPU (eager float32 and
# bfloat16 autocast), each run writing its JSON into OUT_DIR.
#
# Usage (run by hand on a machine with a GPU, from the repository root):
#   bash benchmarks/gpu_throughput.sh [OUT_DIR] [backend ...]     # default: $OUT or runs/gpu; torch jax
# Environment: STEPS (timed rounds, default 10), WARMUP (default 3), BATCHES (default "32 256"),
#   RUN_LIMIT (seconds per throughput run before it is stopped, default 240).
#
# On a machine without Keras (a bare GPU image holding only PyTorch and JAX), carry the wheels
# it lacks in .whl/ and they are installed first, e.g. for Python 3.12 (run where pip works):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl keras==3.15.1 namex optree
# keras-dkd itself is used from this checkout (PYTHONPATH), so nothing is built there.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-runs/gpu}}
shift $(( $# > 0 ? 1 : 0 ))
backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(torch jax)
mkdir -p "$out"
py=${PYTHON:-python3}

. benchmarks/_gpu_env.sh  # carried Keras wheels, PYTHONPATH
# JAX takes 75 % of the GPU's memory at start; leave room for the PyTorch baseline beside it.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.6}

{
  echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$py" - <<'EOF'
# Installed versions, read without importing (importing keras with no KERAS_BACKEND set would
# import TensorFlow, which such a machine may not have).
import importlib.metadata as metadata
import os
print("cpus", os.cpu_count())
for name in ("keras", "torch", "jax", "jaxlib", "tensorflow"):
    try:
        print(name, metadata.version(name))
    except metadata.PackageNotFoundError:
        print(name, "not installed")
EOF
} 2>&1 | tee "$out/machine.txt"

status=0
for backend in "${backends[@]}"; do
  for batch in ${BATCHES:-32 256}; do
    name="throughput_${backend}_b${batch}"
    echo "== $name"
    KERAS_BACKEND=$backend timeout "${RUN_LIMIT:-240}" "$py" benchmarks/throughput.py \
      --steps "${STEPS:-10}" --warmup "${WARMUP:-3}" --batch-size "$batch" \
      --json "$out/$name.json" 2>&1 | grep -v -e "^WARNING" -e "^I0000" | tee "$out/$name.log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "!! $name: exit $rc"; status=1; }
  done
done
exit $status

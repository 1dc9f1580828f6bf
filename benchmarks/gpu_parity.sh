#!/usr/bin/env bash
# Issue 16's bfloat16 accuracy parity on a GPU machine without TensorFlow, as one command:
# benchmarks/precision_parity.py (EmoDB four_class, fold 0, seeds 0 1 2, the default recipe,
# float32 and mixed_bfloat16) trained from data bundles saved beforehand where TensorFlow is.
#
# Usage:
#   # where TensorFlow is (one 18 MiB .npz per seed):
#   KERAS_BACKEND=tensorflow python benchmarks/precision_parity.py --runs unused \
#       --manual-dir ../shared/data/emodb --export-bundles BUNDLES
#   # on the GPU machine, from the repository root:
#   bash benchmarks/gpu_parity.sh BUNDLES OUT_DIR [backend]      # backend: jax (default)
# Writes OUT_DIR/precision_parity.{json,md} and OUT_DIR/parity.log. Keras wheels carried in
# .whl/ are installed first, as in benchmarks/gpu_throughput.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
bundles=${1:?usage: gpu_parity.sh BUNDLES OUT_DIR [backend]}
out=${2:?usage: gpu_parity.sh BUNDLES OUT_DIR [backend]}
backend=${3:-jax}
mkdir -p "$out"
py=${PYTHON:-python3}

. benchmarks/_gpu_env.sh  # carried Keras wheels, PYTHONPATH

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/parity.log"
KERAS_BACKEND=$backend "$py" benchmarks/precision_parity.py --runs /tmp/keras_dkd_parity \
  --bundles "$bundles" --out "$out" 2>&1 | grep -v -e "^WARNING" -e "^I0000" \
  | tee -a "$out/parity.log"
exit "${PIPESTATUS[0]}"

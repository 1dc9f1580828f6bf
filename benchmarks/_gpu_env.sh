# Sourced by the benchmarks/gpu_*.sh scripts (from the repository root, with $py set): on a bare
# GPU image, install the Keras wheels carried in .whl/ into /tmp/keras_dkd_site, then use
# keras-dkd from this checkout (PYTHONPATH), so nothing is built there.
if compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/keras_dkd_site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/keras_dkd_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1

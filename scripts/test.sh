#!/usr/bin/env bash
# Run the test suite once per Keras backend (a pytest process cannot switch backends).
# Usage: scripts/test.sh [backend ...]   (default: tensorflow torch jax)
# Extra pytest arguments come from $PYTEST_ARGS. Prints each backend's test count.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(tensorflow torch jax)

declare -A summary
status=0
for backend in "${backends[@]}"; do
  echo "=== pytest under KERAS_BACKEND=$backend ==="
  log=$(mktemp)
  start=$(date +%s)
  # shellcheck disable=SC2086
  KERAS_BACKEND=$backend "$VENV/bin/python" -m pytest ${PYTEST_ARGS:-} 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  secs=$(( $(date +%s) - start ))
  line=$(grep -E "^=+ .*(passed|failed|error|skipped|no tests ran).* in [0-9.]+s" "$log" | tail -n 1 | tr -d '=')
  rm -f "$log"
  if [ "$rc" -eq 5 ]; then
    echo "!! KERAS_BACKEND=$backend: pytest collected no tests"; status=1
  elif [ "$rc" -ne 0 ]; then
    status=1
  fi
  summary[$backend]="rc=$rc ${secs}s ${line:-}"
done

echo "=== test summary ==="
for backend in "${backends[@]}"; do
  echo "  $backend: ${summary[$backend]}"
done
exit $status

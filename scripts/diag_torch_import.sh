#!/usr/bin/env bash
# Why does torch fail to import ("annotate(strtag)") in processes started during the GPU test session?
# Runs the test files one by one and, after each, imports torch in a fresh child from the repo root.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 PYDG_CACHE_DIR=/tmp/pydg-cache
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
log=$OUT/diag.log
probe() {
  python3 - <<'PY' 2>&1 | tail -n 2
a, b = "str", "tag"
s = f"{a} {b}"
try:
    import torch
    print("torch ok", repr(s))
except Exception as e:
    print("torch FAIL", type(e).__name__, str(e).splitlines()[0], repr(s))
PY
}
{
  site=$(python3 -c "import os, torch; print(os.path.dirname(torch.__file__))")
  echo "torch at $site"; python3 -c "import sys; print(sys.version, sys.flags, sys.pycache_prefix)"
  ls -la --time-style=full-iso "$site/_library/__pycache__/" | grep -E "infer_schema|custom_ops"
  touch /tmp/marker; sleep 1
  echo "start: $(probe)"
  for f in tests/test_*.py; do
    python3 -m pytest -q -p no:cacheprovider "$f" > /tmp/t.log 2>&1
    r=$(probe)
    echo "$f: $(tail -n 1 /tmp/t.log) | $r"
    if [[ $r == *FAIL* ]]; then
      echo "== files newer than the start marker (site-packages, repo, home, tmp):"
      find "$(dirname "$site")" "$PWD" "$HOME" -newer /tmp/marker -type f 2>/dev/null | grep -v pydg-cache | head -n 60
      ls -la --time-style=full-iso "$site/_library/__pycache__/" | grep -E "infer_schema|custom_ops"
      env | sort > "$OUT/env_after.txt"
      break
    fi
  done
} > "$log" 2>&1
cat "$log"

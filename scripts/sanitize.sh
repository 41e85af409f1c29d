#!/usr/bin/env bash
# compute-sanitizer's memcheck, racecheck and synccheck on the dense, contiguous and masked kernels
# (scripts/sanitize_driver.py: small shapes, out-of-range m_indices and masked_m values included).
# From the repo root, on a machine with an sm_90 GPU and torch:
#   bash scripts/sanitize.sh [memcheck] [racecheck] [synccheck]      (default: all three)
# Logs land in $OUT (default /tmp/out): sanitize_plain.log (the driver without a tool) and
# sanitize_<tool>.log; the last lines printed are one summary per tool. Exit 0 only if every tool
# reports no error and every call of the driver passed.
#
# compute-sanitizer is taken from $COMPUTE_SANITIZER, PATH, /usr/local/cuda, the Python package
# nvidia-cuda-sanitizer-api-cu12, or a wheel of it in .whl/ (unpacked to /tmp). Where the GPU machine
# cannot install packages, fetch the wheel beforehand and carry .whl:
#   python -m pip download --no-deps -d .whl nvidia-cuda-sanitizer-api-cu12
set -uo pipefail
cd "$(dirname "$0")/.."

export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export PYDG_CACHE_DIR=${PYDG_CACHE_DIR:-/tmp/pydg-cache}
OUT=${OUT:-/tmp/out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"

tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=(memcheck racecheck synccheck)
for tool in "${tools[@]}"; do
  case $tool in
    memcheck|racecheck|synccheck) ;;
    *) echo "usage: bash scripts/sanitize.sh [memcheck] [racecheck] [synccheck]" >&2; exit 2 ;;
  esac
done

find_sanitizer() {
  local wheel_bin candidate
  wheel_bin=$("$PYTHON" -c 'import os, nvidia.cuda_sanitizer_api as m; print(os.path.join(list(m.__path__)[0], "bin", "compute-sanitizer"))' 2>/dev/null)
  for candidate in "${COMPUTE_SANITIZER:-}" "$(command -v compute-sanitizer 2>/dev/null)" \
      /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer "$wheel_bin"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  # A carried wheel: unpack it once (a wheel is a zip; its binary finds its libraries beside it).
  local wheel
  wheel=$(ls .whl/nvidia_cuda_sanitizer_api*.whl 2>/dev/null | head -n 1)
  if [ -n "$wheel" ]; then
    "$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$wheel" /tmp/compute-sanitizer || return 1
    candidate=/tmp/compute-sanitizer/nvidia/cuda_sanitizer_api/bin/compute-sanitizer
    chmod +x "$candidate" && echo "$candidate" && return 0
  fi
  return 1
}

if ! SANITIZER=$(find_sanitizer); then
  echo "compute-sanitizer not found (set COMPUTE_SANITIZER, or carry .whl/ with nvidia-cuda-sanitizer-api-cu12)" >&2
  exit 2
fi
export LD_LIBRARY_PATH=$(dirname "$(dirname "$SANITIZER")")/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "compute-sanitizer: $SANITIZER ($("$SANITIZER" --version 2>/dev/null | tail -n 1))"

# Without a tool first: every kernel is compiled into the cache and every result checked, so the
# sanitized runs below only load and launch.
if ! "$PYTHON" scripts/sanitize_driver.py --what all > "$OUT/sanitize_plain.log" 2>&1; then
  echo "the driver fails without a sanitizer (see $OUT/sanitize_plain.log):"
  tail -n 20 "$OUT/sanitize_plain.log"
  exit 1
fi

status=0
summaries=()
for tool in "${tools[@]}"; do
  log=$OUT/sanitize_$tool.log
  # racecheck tracks every shared-memory access and is far slower: the small shapes only, or the
  # driver's set named by RACECHECK_WHAT (staged: the two output-in-stages calls).
  what=all
  [ "$tool" = racecheck ] && what=${RACECHECK_WHAT:-small}
  extra=()
  [ "$tool" = racecheck ] && extra=(--racecheck-report all)
  # Without torch's caching allocator every tensor is its own allocation, so memcheck sees an
  # access that leaves one tensor for its neighbour.
  # API errors are not reported: cuda-bindings resolves driver entry points lazily through
  # cuGetProcAddress and probes some that this driver lacks (H100, 2026-11-23: 34 such host-side
  # CUDA_ERROR_INVALID_VALUE reports and no device error); pydg's own driver errors raise anyway.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" --error-exitcode 99 --report-api-errors no "${extra[@]}" \
    "$PYTHON" scripts/sanitize_driver.py --what "$what" > "$log" 2>&1
  rc=$?
  summary=$(grep -E "(ERROR|RACECHECK) SUMMARY" "$log" | tail -n 1 | sed -E 's/^=+ *//')
  passed=$(grep -c '^ok ' "$log")
  failed=$(grep -c '^FAIL ' "$log")
  summaries+=("$tool: exit $rc; ${summary:-no summary line}; driver calls ok $passed, failed $failed")
  [ "$rc" -eq 0 ] && [ "$failed" -eq 0 ] && [ -n "$summary" ] || status=1
done

echo
echo "==== sanitize summary ($OUT/sanitize_*.log) ===="
printf '%s\n' "${summaries[@]}"
exit $status

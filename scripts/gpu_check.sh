#!/usr/bin/env bash
# The one script for a device call, from the repo root (carry .anchor to compare with DeepGEMM):
#   bash scripts/gpu_check.sh [tests|bench|all|extras|sweep|profile|options|variants|pending] [extra bench args, e.g. --what dense,host --iters 10]
# Name the commit that runs (the device's .git is the session's first): PYDG_GIT_COMMIT=<hash> bash ...
# extras: what the issues measure beside the suite and the GEMM benchmark, into $OUT/extras.log:
# compute-sanitizer (memcheck, synccheck, racecheck), the cast kernels' bandwidth (scripts/bench_cast.py),
# cold-start numbers (scripts/cold_start.py) and the timed warm-up of the contract's shapes, cold and warm.
# sweep: scripts/plan_sweep.py on the shapes where pydg trails DeepGEMM into
# $OUT/sweep.log (extra arguments replace the default shape list).
# profile: ncu (speed of light, warp stalls, compute and memory workload, launch and instruction
# statistics) on pydg's kernel and, with
# .anchor, DeepGEMM's, for each shape given as plan_sweep.py takes them (dense or grouped; default
# 4096,2112,7168 and 64,2112,7168), into
# $OUT/profile.txt. PYDG_NCU_CLOCKS=none profiles at the GPU's own clocks (ncu locks them to base by
# default, where a 12 us kernel may rank otherwise than in the bench). PYDG_NCU_METRICS adds ncu metrics by
# name, comma-separated (e.g. dram__bytes_read.sum,lts__t_sector_hit_rate.pct).
# options: the GPU tests of the early start (tests/test_early_start_gpu.py, which the heuristic takes
# in the contiguous layout only; at most PYDG_TEST_S, 200 s) and, if they pass, the same-run A/B of the
# options (scripts/ab_plans.py --toggle $PYDG_TOGGLES, default early,output; at most PYDG_AB_S, 210 s)
# on the shapes given or the default
# list, then each kernel change waiting in variants/ (NAME.patch, applied with git apply to a copy of
# pydg/kernels) against the package's sources (scripts/ab_kernels.py; at most PYDG_VARIANT_S, 110 s,
# each), into $OUT/options.log.
# variants: only the A/B of each patch waiting in variants/ (as options ends with), on the shapes given or
# VARIANT_SHAPES, into $OUT/variants.log: about 60-110 s a patch.
# pending: the same-run A/Bs named in PYDG_PENDING (bench/NOTES.md says where each has run), into
# $OUT/pending.log: evict (B's L2 evict-first hint toggled on the shapes of its rule), output (the
# output staged or not on the shapes whose plan 4f65324 changed), band (the tile walk's band width),
# early (the early start
# toggled on the contiguous, masked 4 x 256 and the dense shapes behind DeepGEMM), early3 (the early start
# on the four contiguous shapes and two dense ones of their tile, three rounds), earlyk (the same on
# contiguous shapes by K and N), earlyw (the early start on dense shapes by tiles per CTA, three rounds),
# split (the split tail's GPU tests, then the split toggled on the shapes it applies to, three rounds),
# kloop (variants/k_loop_bound_folded_late.patch, the k-loop scheduled as before 48231a0, against the
# package's on the kernels whose SASS that commit changed, three rounds), masked (masked 4 x 256 with the
# output staged the other way, then B's hint toggled, three rounds; not yet run), wide (the 208-wide
# tiles' GPU tests, then the plans chosen with them against those chosen without on shapes where
# the model takes them, three rounds; not yet run). split alone takes
# about 300 s, kloop and masked together about 250 s (estimated): two calls. No DeepGEMM needed, but with .anchor carried its build runs first (about
# 120 s, before any timing), and a bench call on the same warm machine then skips it.
# One device call is 600 s at most: `tests` (485 s in one process, now in four) and `bench --what dense,grouped` with .anchor
# (about 300 s, DeepGEMM's build included) do not fit together; `bench` + `sweep` do, `tests` + `extras`
# only just (extras last timed at 56b172a).
# Every log lands in $OUT (default /tmp/out): gpu.txt, env.txt, dg_build.log (if DeepGEMM was built),
# tests.log, bench.log, bench.json, bench.png — at most 7 files, no folders, within what a device call
# returns (8 files).
set -uo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
[ $# -gt 0 ] && shift
case $what in
  tests|bench|all|extras|sweep|profile|options|variants|pending) ;;
  *) echo "usage: bash scripts/gpu_check.sh [tests|bench|all|extras|sweep|profile|options|variants|pending] [extra bench args]" >&2; exit 2 ;;
esac

export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYDG_CACHE_DIR=/tmp/pydg-cache
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"

# The CSV first: its second line is the one-line GPU description of the summary below.
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv
  echo; nvidia-smi; } > "$OUT/gpu.txt" 2>&1

# torch in fresh processes, alone and after JAX: a broken torch import once hid every torch test (it was
# pydg's NVRTC log buffer corrupting Python's shared b" ", fixed in pydg/driver/nvrtc.py).
{ env | sort; echo; for pre in "" "import jax; "; do
    python3 -c "${pre}import torch; print('import ${pre}torch: ok', torch.__version__)" 2>&1 | tail -n 3; done
} > "$OUT/env.txt" 2>&1

# Checked before DeepGEMM's build, which would cost a call with nothing to run about 120 s.
if [ "$what" = pending ] && [ -z "${PYDG_PENDING:-}" ]; then
  echo "nothing pending: name the A/Bs, e.g. PYDG_PENDING='evict band'"; exit 2
fi

# DeepGEMM 2.8, built once per machine into /tmp/dg by the anchor's script (it keeps the build log in $OUT).
# Its JIT compiles with nvcc at call time, so its include path and cache must be set for the bench too.
if [ -f .anchor/run_anchor.sh ]; then
  if bash .anchor/run_anchor.sh build; then
    export PYTHONPATH=$PYTHONPATH:/tmp/dg CPLUS_INCLUDE_PATH=/tmp/dg/third-party/elf/include \
      CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} DG_JIT_CACHE_DIR=/tmp/dg-jit
  else
    echo "DeepGEMM build failed (see $OUT/dg_build.log): benchmarking without it"
  fi
else
  echo "no .anchor/ carried: benchmarking without DeepGEMM"
fi

if [ "$what" = extras ]; then
  {
    echo "== sanitizers"; OUT=/tmp/sanitize bash scripts/sanitize.sh memcheck synccheck racecheck 2>&1 | tail -n 8
    echo "== cast bandwidth"; python3 scripts/bench_cast.py 2>&1 | tail -n 20
    echo "== cold start"; python3 scripts/cold_start.py 2>&1 | tail -n 20
    warm_dir=$(mktemp -d)
    TIMEFORMAT="%R s"
    for run in cold warm; do
      echo "== pydg compile --contract ($run, $(nproc) cores):"
      time (PYDG_CACHE_DIR=$warm_dir python3 -m pydg compile --contract > /dev/null 2>&1)
    done
  } > "$OUT/extras.log" 2>&1
  cat "$OUT/extras.log"
  exit 0
fi

if [ "$what" = sweep ]; then
  shapes=("$@")
  [ ${#shapes[@]} -gt 0 ] || shapes=(64,2112,7168 128,2112,7168 128,4096,7168 64,7168,16384 4096,2112,7168
    contiguous:4,8192,4096,7168 contiguous:8,4096,7168,2048 masked:4,256,4096,7168 masked:4,256,7168,2048)
  python3 scripts/plan_sweep.py "${shapes[@]}" > "$OUT/sweep.log" 2>&1
  sweep_status=$?
  grep -E "^(BEST|  next)" "$OUT/sweep.log"
  exit $sweep_status
fi

# Each kernel change waiting under variants/ (a patch to a copy of pydg/kernels) against the package's
# sources, on the shapes given (default VARIANT_SHAPES), at most PYDG_VARIANT_S (110 s) each.
VARIANT_SHAPES=(4096,7168,16384 4096,4096,7168 4096,32768,512 4096,24576,1536 4096,7168,2048 masked:4,256,7168,2048
  masked:4,256,4096,7168 64,2112,7168)
run_variants() {
  local shapes=("$@")
  [ ${#shapes[@]} -gt 0 ] || shapes=("${VARIANT_SHAPES[@]}")
  for patch_file in variants/*.patch; do
    [ -f "$patch_file" ] || continue
    variant=/tmp/variant_$(basename "$patch_file" .patch)
    rm -rf "$variant"; cp -r pydg/kernels "$variant"
    echo "== variant $patch_file"
    git apply -p1 --unsafe-paths --directory="$variant" "$patch_file" || { echo "does not apply"; continue; }
    timeout "${PYDG_VARIANT_S:-110}" python3 scripts/ab_kernels.py "$variant" "${shapes[@]}" 2>&1
  done
}

if [ "$what" = variants ]; then
  run_variants "$@" > "$OUT/variants.log" 2>&1
  cat "$OUT/variants.log"
  exit 0
fi

if [ "$what" = options ]; then
  shapes=("$@")
  [ ${#shapes[@]} -gt 0 ] || shapes=(4096,32768,512 4096,24576,1536 4096,7168,2048 4096,4096,7168 4096,7168,16384
    4096,2112,7168 2500,7168,7168 64,7168,16384 128,4096,7168 contiguous:8,4096,4096,7168 contiguous:4,8192,7168,2048
    masked:4,256,7168,2048 masked:4,256,4096,7168 masked:2,512,7168,2048 masked:1,1024,4096,7168 1024,7168,2048
    1024,4096,7168)
  # A wrong hand-back of stages hangs the kernel: the tests get a time limit, and the A/B runs only
  # after they pass. Two pytest processes side by side: the tests compile their kernels one by one.
  ( pids=()
    for file in tests/test_early_start_gpu.py; do
      for part in dense "not dense"; do
        timeout "${PYDG_TEST_S:-200}" python3 -m pytest -q -x -rs -p no:cacheprovider "$file" -k "$part" > "/tmp/options_$$_${#pids[@]}.log" 2>&1 &
        pids+=($!)
      done
    done
    options_status=0
    for i in "${!pids[@]}"; do
      wait "${pids[$i]}" || options_status=1
      tail -n 15 "/tmp/options_$$_$i.log"
    done
    [ "$options_status" = 0 ] || exit "$options_status"
    timeout "${PYDG_AB_S:-210}" python3 scripts/ab_plans.py --toggle "${PYDG_TOGGLES:-early,output}" "${shapes[@]}" 2>&1
    run_variants ) > "$OUT/options.log" 2>&1
  options_status=$?
  cat "$OUT/options.log"
  exit $options_status
fi

if [ "$what" = pending ]; then
  # evict ran at bc24410, output and band at 1ba1d68.
  parts=" ${PYDG_PENDING:-} "
  ( if [[ $parts == *" evict "* ]]; then
      # The shapes that set the readers rule and the byte cap (bench/NOTES.md, 2026-12-07d).
      echo "== B's loads evict-first in L2 or not (heuristics.B_EVICT_FIRST_MAX_READERS, _BYTES)"
      timeout 170 python3 scripts/ab_plans.py --iters 60 --toggle evictB 1,18432,18432 37,18432,18432 \
        1,7168,18432 64,7168,16384 1,18432,7168 300,18432,7168 1000,7168,7168 1000,18432,7168 300,2048,18432
    fi
    if [[ $parts == *" output "* ]]; then
      echo "== output staged or not (4f65324 unstaged the multi-wave 256-row shapes)"
      timeout 160 python3 scripts/ab_plans.py --iters 20 --toggle output 4096,4096,7168 4096,7168,16384 6000,7168,7168 \
        2500,18432,7168 masked:4,256,4096,7168 masked:1,1024,4096,7168 1024,4096,7168
    fi
    if [[ $parts == *" band "* ]]; then
      echo "== band width of the tile walk"
      timeout 70 python3 scripts/ab_plans.py --iters 20 --toggle band8,band32 contiguous:8,4096,4096,7168 \
        contiguous:4,8192,4096,7168 4096,4096,7168 4096,7168,16384
    fi
    if [[ $parts == *" early "* ]]; then
      # Last timed in the eighteenth session (0.988x contiguous 8 x 4096, 0.982x masked 4 x 256 x 7168 x 2048),
      # on kernels since changed; the three dense shapes are those still behind DeepGEMM.
      echo "== the next tile's first wgmma issued before the epilogue's stores or not"
      timeout 200 python3 scripts/ab_plans.py --iters 20 --toggle early contiguous:8,4096,4096,7168 \
        contiguous:4,8192,4096,7168 contiguous:8,4096,7168,2048 contiguous:4,8192,7168,2048 masked:4,256,7168,2048 \
        masked:4,256,4096,7168 4096,7168,16384 4096,4096,7168 4096,32768,512
    fi
    # Three rounds of the early start toggled against the chosen plan (the heuristic takes it in the
    # contiguous layout at K >= 4096 since 1b6bc6a, so there the ratio is the time without it).
    early_rounds() {
      for round in 1 2 3; do
        timeout 90 python3 scripts/ab_plans.py --iters 30 --toggle early "$@"
      done
    }
    if [[ $parts == *" early3 "* ]]; then
      # The four contiguous shapes, and two dense shapes of their 128 x 192 tile at K = 7168: the tile or
      # the layout? (9d44eee: the layout; bench/NOTES.md, thirty-first session.)
      echo "== early start on the contiguous shapes, three rounds"
      early_rounds contiguous:4,8192,4096,7168 contiguous:8,4096,4096,7168 contiguous:4,8192,7168,2048 \
        contiguous:8,4096,7168,2048 2500,7168,7168 1000,18432,7168
    fi
    if [[ $parts == *" earlyk "* ]]; then
      # Where the contiguous early start begins to pay (heuristics.EARLY_START_MIN_K_BLOCKS), and at other
      # widths of N.
      echo "== early start in the contiguous layout by K and N, three rounds"
      early_rounds contiguous:4,8192,4096,3072 contiguous:4,8192,4096,4096 contiguous:4,8192,4096,5120 \
        contiguous:4,8192,7168,7168 contiguous:8,4096,2048,7168 contiguous:4,8192,7168,4096
    fi
    if [[ $parts == *" earlyw "* ]]; then
      # Does the early start's contiguous gain follow tiles per CTA? Dense 256x128 tiles at K = 7168 with
      # 6.8 (4096 x 7168), 13.6, 27 and 31 tiles per CTA; the contiguous shapes run 43 (thirty-first session).
      echo "== early start on dense shapes by tiles per CTA, three rounds"
      early_rounds 4096,7168,7168 8192,7168,7168 16384,7168,7168 32768,4096,7168
    fi
    if [[ $parts == *" split "* ]]; then
      # The split tail (GemmPlan.split_tail): its GPU tests, then three rounds on the shapes the heuristic
      # splits (the partial last wave at most half the grid) and two it does not.
      echo "== split tail: GPU tests"
      timeout 200 python3 -m pytest -q -rs -p no:cacheprovider tests/test_split_tail_gpu.py 2>&1 | tail -n 15
      if [ "${PIPESTATUS[0]}" = 0 ]; then
        echo "== split tail toggled, three rounds"
        for round in 1 2 3; do
          timeout 100 python3 scripts/ab_plans.py --iters 30 --toggle split 4096,32768,512 4096,24576,1536 6000,7168,2048 \
            6000,7168,7168 6000,18432,2048 6000,18432,7168
        done
      fi
    fi
    if [[ $parts == *" kloop "* ]]; then
      # 48231a0 made the k-loop's bound a compile-time constant: ptxas then schedules the whole-turn loop
      # of 25 of the 83 benchmark kernels differently (bench/NOTES.md, thirty-fourth session). The patch
      # restores the old schedule (scripts/sass_digest.py: 80 of 83 kernels as at 65ccfdc).
      echo "== k-loop bound folded late (the schedule of 65ccfdc) against the package's, three rounds"
      variant=/tmp/variant_kloop; rm -rf "$variant"; cp -r pydg/kernels "$variant"
      git apply -p1 --unsafe-paths --directory="$variant" variants/k_loop_bound_folded_late.patch &&
        for round in 1 2 3; do
          timeout 100 python3 scripts/ab_kernels.py "$variant" 2500,7168,7168 1000,18432,7168 128,24576,1536 \
            300,7168,2048 contiguous:4,8192,7168,2048 contiguous:8,4096,7168,2048 masked:4,256,7168,2048 4096,7168,2048
        done
    fi
    if [[ $parts == *" wide "* ]]; then
      # heuristics.WIDE_TILES: 64x208 and 128x208 tiles. Shapes where the model takes them: by 3.5-6%
      # (M = 200-512) and by a tie (memory-bound M = 1 to 128, where the tie goes to the wider tile).
      echo "== wide tiles: GPU tests"
      timeout 150 python3 -m pytest -q -rs -p no:cacheprovider tests/test_wide_tiles_gpu.py \
        tests/test_block_widths_gpu.py -k "wide or 208" 2>&1 | tail -n 15
      if [ "${PIPESTATUS[0]}" = 0 ]; then
        echo "== wide tiles toggled, three rounds"
        for round in 1 2 3; do
          timeout 100 python3 scripts/ab_plans.py --iters 30 --toggle wide 300,26640,2176 200,26208,3200 \
            512,19552,9600 512,26976,3584 1,25376,3328 64,25840,10240 128,26096,9600
        done
      fi
    fi
    if [[ $parts == *" masked "* ]]; then
      # Masked 4 x 256 misses 0.9x of dense at N = 7168, K = 2048 by 5.5% with device memory at 76% of a
      # copy's rate: the 256x128 plan with its output staged (a fourth stage, B deeper in flight) and the
      # hint, against the chosen 256x112.
      # (One toggle per call: where the chosen plan cannot stage its output, as 256x112 cannot, the best
      # candidate that can is timed both ways beside it.)
      echo "== masked 4 x 256: output staged the other way, then B's hint toggled, three rounds"
      for round in 1 2 3; do
        timeout 60 python3 scripts/ab_plans.py --iters 30 --toggle output masked:4,256,7168,2048 masked:4,256,4096,7168
        timeout 60 python3 scripts/ab_plans.py --iters 30 --toggle evictB masked:4,256,7168,2048 masked:4,256,4096,7168
      done
    fi ) > "$OUT/pending.log" 2>&1
  grep -v " check " "$OUT/pending.log"
  exit 0
fi

if [ "$what" = profile ]; then
  shapes=("$@")
  [ ${#shapes[@]} -gt 0 ] || shapes=(4096,2112,7168 64,2112,7168)
  dg=(); kernels=(pydg_fp8_gemm)
  python3 -c "import deep_gemm" 2> /dev/null && dg=(--deepgemm) kernels+=(sm90_fp8_gemm)
  for shape in "${shapes[@]}"; do
    for kernel in "${kernels[@]}"; do
      echo "==== $shape $kernel"
      # The first 3 calls of each library compile, load and warm it; the 4th launch is profiled.
      # DeepGEMM's process died under ncu (error 11) with DG_PRINT_CONFIGS=1 set (H200, 2026-12-04).
      env -u DG_PRINT_CONFIGS ncu --kernel-name regex:"$kernel" --launch-skip 3 --launch-count 1 --clock-control "${PYDG_NCU_CLOCKS:-base}" \
        --section SpeedOfLight --section WarpStateStats --section ComputeWorkloadAnalysis \
        --section MemoryWorkloadAnalysis --section SchedulerStats --section LaunchStats --section InstructionStats \
        ${PYDG_NCU_METRICS:+--metrics "$PYDG_NCU_METRICS"} \
        python3 scripts/profile_shape.py "$shape" "${dg[@]}" 2>&1 | grep -v "^==PROF=="
    done
  done > "$OUT/profile.txt" 2>&1
  grep -E "^==== |Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|L2 Hit Rate|highest-utilized|dram__|lts__|sm__" "$OUT/profile.txt"
  # PYDG_PROFILE_SOURCE=1: the first shape's warp-stall samples per SASS instruction, one CSV per
  # kernel ($OUT/source_<kernel>.csv; scripts/stall_report.py sums them by code region).
  if [ "${PYDG_PROFILE_SOURCE:-0}" = 1 ]; then
    for kernel in "${kernels[@]}"; do
      ncu --kernel-name regex:"$kernel" --launch-skip 3 --launch-count 1 --section SourceCounters \
        --section WarpStateStats -f -o "/tmp/source_$kernel" python3 scripts/profile_shape.py "${shapes[0]}" "${dg[@]}" \
        > "/tmp/source_$kernel.log" 2>&1 || tail -n 20 "/tmp/source_$kernel.log"
      ncu -i "/tmp/source_$kernel.ncu-rep" --page source --csv --print-source sass > "$OUT/source_$kernel.csv" 2>&1 ||
        ncu -i "/tmp/source_$kernel.ncu-rep" --page source --csv > "$OUT/source_$kernel.csv" 2>&1
      echo "source_$kernel.csv: $(wc -l < "$OUT/source_$kernel.csv") lines"
    done
  fi
  exit 0
fi

tests_status=skipped bench_status=skipped
if [ "$what" = tests ] || [ "$what" = all ]; then
  # Four pytest processes side by side (one run took 485 s; the device call's limit is 600): the CPU
  # compile tests, the GEMM paths, the hardening and cast tests, and the rest. Each has its own kernel
  # cache. -v: a run stopped by the call's time limit still shows which tests finished and how.
  shards=("tests/test_kernels.py"
          "tests/test_gemm_gpu.py tests/test_block_widths_gpu.py tests/test_grouped_gpu.py tests/test_overlap_gpu.py"
          "$(echo tests/test_hardening*.py) tests/test_cast_gpu.py tests/test_torch_ops_gpu.py")
  # The memory-growth test reads the device's free memory, which the other shards change while they
  # run (H100, 2026-12-06: "shrank" by 7.6 GB beside them, passed alone): it runs by itself afterwards.
  alone=tests/test_hardening_gpu.py::test_ten_thousand_calls_over_fifty_shapes_do_not_grow_memory
  rest=(); for shard in "${shards[@]}"; do for f in $shard; do rest+=(--ignore="$f"); done; done
  pids=()
  for i in 0 1 2 3; do
    if [ $i -lt 3 ]; then files=(${shards[$i]}); else files=(tests "${rest[@]}"); fi
    PYDG_CACHE_DIR=/tmp/pydg-cache-$i python3 -m pytest -v -rs -p no:cacheprovider --deselect "$alone" "${files[@]}" > "$OUT/tests_$i.log" 2>&1 &
    pids+=($!)
  done
  tests_status=0
  for pid in "${pids[@]}"; do wait "$pid" || tests_status=1; done
  PYDG_CACHE_DIR=/tmp/pydg-cache-2 python3 -m pytest -v -rs -p no:cacheprovider "$alone" > "$OUT/tests_4.log" 2>&1 || tests_status=1
  # The shards write under $OUT while they run, so a call stopped at its time limit still returns them.
  for i in 0 1 2 3 4; do echo "==== shard $i"; cat "$OUT/tests_$i.log"; done > "$OUT/tests.log" && rm -f "$OUT"/tests_?.log
  grep -E " (FAILED|ERROR)" "$OUT/tests.log" | head -n 40
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  python3 -m pydg bench --json "$OUT/bench.json" --plot "$OUT/bench.png" "$@" 2>&1 | tee "$OUT/bench.log"
  bench_status=${PIPESTATUS[0]}
fi

echo
echo "==== gpu_check summary ($what) ===="
echo "GPU: $(sed -n 2p "$OUT/gpu.txt")"
if [ "$tests_status" != skipped ]; then
  echo "tests (exit $tests_status): $(grep -E '^=+ .*(passed|failed|error)' "$OUT/tests.log" | sed 's/^=* //; s/ =*$//' | paste -sd '|')"
fi
if [ "$bench_status" != skipped ]; then
  echo "bench (exit $bench_status):"
  grep -E '^(geomean|grouped: masked|dense: pydg|shapes: pydg|!! [0-9]+ pydg|~ [0-9]+ means)' "$OUT/bench.log" | sed 's/^/  /'
fi
for status in "$tests_status" "$bench_status"; do
  [ "$status" = skipped ] || [ "$status" = 0 ] || exit 1
done
exit 0

#!/usr/bin/env bash
# Every side-by-side benchmark on the GPU machine in one call (at most 9 minutes by the limits below), each under its own
# time limit so one slow benchmark cannot take the others' time; outputs in $OUT/bench_*.txt for BENCHMARKS.md.
# The settings are the anchors' (shared/platform.md §6), with fewer draws where the anchor's run would not fit.
#
#   on the machine (wheels carried in .whl, as for bench/gpu_session.py):
#   S=$(date +%s) && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD SERPENT_COMMIT=<HEAD> && bash bench/gpu_bench.sh
#   rehearsal on a CPU (small settings, under a minute):  BENCH_CPU=1 OUT=/tmp/bench bash bench/gpu_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bench}; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
run() {   # run NAME LIMIT_SECONDS COMMAND...: output to $OUT/bench_NAME.txt, a line in the summary whatever happens
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout --signal=INT --kill-after=15 "$limit" "$@" > "$OUT/bench_$name.txt" 2>&1
  local rc=$?
  echo "$name: rc=$rc, $(( $(date +%s) - t0 )) s: $*" | tee -a "$OUT/bench_summary.txt"
  tail -n 25 "$OUT/bench_$name.txt"
}
if [ "${BENCH_CPU:-0}" = 1 ]; then
  run train 120 python3 bench/train.py --pairs 3
  run llc 120 python3 bench/llc.py --size tiny --ctx 128 --draws 20 --pairs 2
  run susceptibility 180 python3 bench/susceptibility.py --draws 5
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/bench_gpu.txt" 2>&1
  run train 150 python3 bench/train.py --size full --batch 100 --device cuda
  run llc 120 python3 bench/llc.py --device cuda --batch 32 --ctx 1024 --chains 4 --draws 50 --pairs 2
  run susceptibility 240 python3 bench/susceptibility.py --size full --heads all --chains 4 --draws 10 --batch 32 \
    --probe 96 --device cuda --precision auto
fi

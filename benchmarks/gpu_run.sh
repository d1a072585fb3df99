#!/usr/bin/env bash
# The prepared GPU check of issue 8: every ANCHORS workload on one GPU inside one device call (~9 minutes at most).
# Prepare here with `bash tools/gpu_prepare.sh`, then run with the device tool:
#   run(command="bash benchmarks/gpu_run.sh", carry=[".gpu"], timeout_s=590)
# JSON lines (one per workload and phase, as bench_*.py print them) go to $OUT/gpu_bench.jsonl, stderr to
# $OUT/gpu_run.log. Each workload has its own time cap, so one slow workload cannot lose the others' figures.
# DEVICE=cpu SKIP_WHEELS=1 CAP=... run the same steps here (a plumbing check; the figures mean nothing).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 LIB_NB_SHARED="$PWD/.gpu/shared" PYTHONPATH="/tmp/site:$PWD"
if [ -z "${SKIP_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
fi
{ date -u; nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1; python3 -c 'import torch; print(torch.__version__)'; } >> "$OUT/gpu_run.log"
step() {   # step CAP_SECONDS SCRIPT ARGS...: one workload, capped
  local cap=$1; shift
  echo "== $* (cap ${CAP:-$cap} s)" >> "$OUT/gpu_run.log"
  timeout "${CAP:-$cap}" python3 "$@" --device "$DEVICE" 2>> "$OUT/gpu_run.log" | tee -a "$OUT/gpu_bench.jsonl"
  echo "exit ${PIPESTATUS[0]}" >> "$OUT/gpu_run.log"
}
step 40  benchmarks/bench_lm.py --quick --workload pythia14m_random_n50_ctx32 --no-flops       # warm-up and smoke
step 60  benchmarks/bench_build.py --repeat 3                                                  # modadd_paper (ANCHORS H200: 1.24 s)
step 100 benchmarks/bench_lm.py --workload pythia14m_random_n50_ctx32                          # ANCHORS H200: 124 s
step 130 benchmarks/bench_lm.py --workload pythia14m_random_n100_ctx128                        # ANCHORS H200: 103 s
step 220 benchmarks/bench_lm.py --workload gpt2small_random_n60_ctx128 --max-memory-gb 16      # target: within 16 GB

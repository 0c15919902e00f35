#!/usr/bin/env bash
# One call on the lent GPU: install aios there, run tests/test_gpu.py, then the commands and
# measurements issue 9 asks to see on a GPU, most wanted first, then the whole suite with the
# time that is left. Every stage has its own time limit and the call keeps inside
# AIOS_CHECK_BUDGET seconds (default 540, for the device's 600 s a call), so one slow stage
# costs that stage, not the call; what the budget did not reach is listed as "not run".
#
#   here:   bash benchmarks/gpu/kit.sh
#   device: run(command="bash benchmarks/gpu/check.sh", carry=[".whl", ".deb"], timeout_s=600)
#   again, for what the first call did not reach (wheels and install always run; names as in summary.md):
#           run(command="AIOS_CHECK_ONLY='compare-dot compare-matmul top-tmux suite' bash benchmarks/gpu/check.sh", ...)
#
# What comes back under $OUT (the device tool returns at most 8 files):
#   summary.md  one line a stage (exit code, seconds), then the tables (also printed last)
#   check.log   everything every stage printed
#   ops.csv, trace.json   `aios run --csv/--trace` on the first model
#   runs.jsonl  every figure of each model's `aios run -f json` (without the per-token lists)
#   hf.jsonl    aios beside HF transformers' generate, interleaved, on the same presets (benchmarks/bench_hf_generate.py)
#   top.txt     `aios top -b cuda` captured from tmux
# (attention-dram, issue 15's Nsight Compute check, prints its table into check.log and summary.md)
#   junit.xml   the whole suite, test by test
#
# On a machine without a GPU, `AIOS_CHECK_BACKEND=torch AIOS_CHECK_MODELS=tiny bash
# benchmarks/gpu/check.sh` runs every stage's command line against the CPU torch engine, to
# catch a broken line before it costs device time.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-/tmp/aios-check}
mkdir -p "$OUT"
B=${AIOS_CHECK_BACKEND:-cuda}
read -r -a MODELS <<< "${AIOS_CHECK_MODELS:-qwen2.5-0.5b qwen2.5-1.5b qwen2.5-7b qwen3-0.6b}"
TOP_MODEL=${MODELS[1]:-${MODELS[0]}}
ONLY=" ${AIOS_CHECK_ONLY:-} "
START=$(date +%s)
DEADLINE=$((START + ${AIOS_CHECK_BUDGET:-540}))
LOG=$OUT/check.log SUMMARY=$OUT/summary.md
: > "$LOG"
printf '| stage | exit | seconds |\n|---|---|---|\n' > "$SUMMARY"

wanted() {  # wanted NAME: in AIOS_CHECK_ONLY's list, or every stage when it is empty
  [[ $ONLY == "  " || $ONLY == *" $1 "* || $1 == install || $1 == wheels ]]
}

stage() {  # stage NAME SECONDS COMMAND...: run it under the smaller of SECONDS and the time left
  local name=$1 limit=$2 left rc t0
  shift 2
  wanted "$name" || return 0
  left=$((DEADLINE - $(date +%s)))
  if ((left < 15)); then
    echo "| $name | not run: out of time | |" >> "$SUMMARY"
    return
  fi
  ((limit > left)) && limit=$left
  printf '\n===== %s (limit %ss): %s\n' "$name" "$limit" "$*" >> "$LOG"
  t0=$(date +%s)
  timeout -k 5 "$limit" "$@" >> "$LOG" 2>&1
  rc=$?
  ((rc == 124 || rc == 137)) && rc="$rc (timed out)"
  echo "| $name | $rc | $(($(date +%s) - t0)) |" >> "$SUMMARY"
}

# --- install: the carried wheels first (built for the GPU image's Python 3.12; a CPU dry run
# keeps its own packages), then aios itself without touching the image's torch
if [[ $B == cuda ]] && compgen -G ".whl/*.whl" > /dev/null; then
  stage wheels 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if compgen -G ".deb/*.deb" > /dev/null && ! command -v tmux > /dev/null; then
  for f in .deb/*.deb; do dpkg -x "$f" /tmp/debroot; done
  export PATH=/tmp/debroot/usr/bin:$PATH LD_LIBRARY_PATH=/tmp/debroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
stage install 120 python3 -m pip install -q --no-deps --no-build-isolation -e .
# the console script lands beside the image's python3; make sure `aios` is that one
PATH=$(dirname "$(python3 -c 'import sys; print(sys.executable)')"):$PATH
export PATH

# --- what is here, and the tests that need the GPU
stage machine 30 bash -c 'nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"; nproc; free -g'
stage test_gpu 240 python3 -m pytest -p no:cacheprovider -rA tests/test_gpu.py

# --- the cuda engine through the CLI: side by side with torch on the CPU, the exports, then
# each model at issue 9's shape (a 128-id prompt, 256 new tokens, bf16, batch 1)
stage peak 150 aios compare peak --refresh
stage run-side-by-side 240 aios run -b "$B,torch" -m "${MODELS[0]}" -n 32 --csv "$OUT/ops.csv" --trace "$OUT/trace.json"
stage trace-opens 30 python3 -c "
import json
t = json.load(open('$OUT/trace.json'))
ev = t['traceEvents'] if isinstance(t, dict) else t
names = {e.get('name') for e in ev}
print(len(ev), 'events;', len(names), 'names, e.g.', sorted(n for n in names if n)[:12])
assert ev, 'empty trace'"
PROMPT=$(seq -s, 11 138)  # 128 prompt ids
for m in "${MODELS[@]}"; do
  stage "run-$m" 180 bash -c "aios run -b $B -m $m --prompt-ids $PROMPT -n 256 --ignore-eos --profile token -q -f json > /tmp/run-$m.json"
done
# one row a model (and every figure, without the per-token lists, in runs.jsonl)
stage runs-table 30 python3 - "$OUT/runs.jsonl" "${MODELS[@]}" <<'PY'
import json, sys
out, models = sys.argv[1], sys.argv[2:]
print("| model | dtype | decode tok/s | median ms/token | TTFT ms | peak device memory | GB/s | share of copy peak |")
print("|---|---|---|---|---|---|---|---|")
with open(out, "w") as f:
    for m in models:
        try:
            d = json.load(open(f"/tmp/run-{m}.json"))
        except (OSError, ValueError) as e:
            print(f"| {m} | no result ({e}) |")
            continue
        d = d[0] if isinstance(d, list) else d
        f.write(json.dumps({k: v for k, v in d.items() if not isinstance(v, (list, dict))}) + "\n")
        gib = (d.get("device_peak_bytes") or 0) / 2**30
        share = d.get("bandwidth_share_of_peak")
        print(f"| {m} | {d['dtype']} | {d['decode_tokens_per_s']:.1f} | {d['decode_ms_median']:.3f} | {d['ttft_s'] * 1e3:.2f} "
              f"| {gib:.2f} GiB | {(d.get('achieved_bandwidth_bytes_per_s') or 0) / 1e9:.1f} "
              f"| {'n/a' if share is None else f'{share:.0%}'} |")
PY

# --- the baselines beside it: HF generate on the same presets; bf16 against fp32 greedy ids
DEV=$([[ $B == cuda ]] && echo cuda || echo cpu)
HF_DTYPE=$([[ $B == cuda ]] && echo bfloat16 || echo float32)
MODEL_LIST=$(IFS=,; echo "${MODELS[*]}")
stage hf-generate 240 python3 benchmarks/bench_hf_generate.py --device "$DEV" --aios "$B" --dtype "$HF_DTYPE" --models "$MODEL_LIST" --repeat 2 --jsonl "$OUT/hf.jsonl"
stage hf-compile 150 python3 benchmarks/bench_hf_generate.py --device "$DEV" --aios none --dtype "$HF_DTYPE" --models "${MODELS[0]}" --repeat 2 --compile
stage bf16-agreement 150 python3 benchmarks/bench_bf16_agreement.py --backend "$B" --models "${MODELS[0]}"

# --- the kernel comparisons, with their GPU rows and crossovers
stage compare-dot 150 aios compare dot
stage compare-matmul 200 aios compare matmul
stage prefill-decode 150 aios compare prefill-decode -b "$B"

# --- aios top in a real terminal: memory, utilisation, power and temperature from NVML
if ! wanted top-tmux; then
  :
elif command -v tmux > /dev/null; then
  stage top-tmux 75 bash -c "
    tmux -L aios kill-server 2>/dev/null
    tmux -L aios new-session -d -x 200 -y 60 'env -u COLUMNS -u LINES aios top -b $B -m $TOP_MODEL --exit-after 60'
    tmux -L aios set-option -g remain-on-exit on  # an aios top that dies at start leaves its error on the pane
    sleep 40; tmux -L aios capture-pane -p -t 0 > '$OUT/top.txt'; cat '$OUT/top.txt'
    tmux -L aios kill-server"
else
  echo "| top-tmux | not run: no tmux (run benchmarks/gpu/kit.sh and carry .deb) | |" >> "$SUMMARY"
fi
# the NCCL path of --tp/--pp (engines/dist): torchrun's ranks, one a GPU (one GPU: a 1-rank group)
stage dist-torchrun 120 bash -c "N=\$(python3 -c 'import torch; print(2 if torch.cuda.device_count() >= 2 else 1)'); torchrun --nproc-per-node \$N -m aios_cli run -b $B -m tiny-gqa --tp \$N -n 16"
stage info 60 aios info

# --- issue 15: SDPA's DRAM bytes (Nsight Compute) against aios sim attention's prediction
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2> /dev/null | head -1)
if ! wanted attention-dram; then
  :
elif [[ $B == cuda && -n $NCU ]]; then
  stage attention-dram 240 python3 benchmarks/gpu/attention_dram.py --ncu "$NCU"
else
  echo "| attention-dram | not run: needs a GPU and ncu | |" >> "$SUMMARY"
fi

# --- the whole suite with what is left
stage suite 9999 python3 -m pytest -p no:cacheprovider -n "${AIOS_CHECK_WORKERS:-8}" -q -rfEs --junitxml "$OUT/junit.xml"

{
  echo
  echo "backend $B, models ${MODELS[*]}, $(($(date +%s) - START)) s in all"
  # the lines users read: the tables, the peaks, the crossovers, and how the tests ended
  for s in runs-table hf-generate hf-compile bf16-agreement attention-dram; do
    sed -n "/^===== $s /,/^===== /p" "$LOG" | grep -vE '^(=====|$)'
  done
  grep -E "memory bandwidth|matmul .*FLOP/s|crossover|[0-9]+ (passed|failed)|^(FAILED|ERROR) " "$LOG" | tail -40
} >> "$SUMMARY"
cat "$SUMMARY"

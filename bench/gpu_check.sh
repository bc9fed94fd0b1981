#!/usr/bin/env bash
# One GPU check for a lent CUDA machine (<= 8 minutes on one H100/H200); prints ONE table.
#
#   bash bench/gpu_check.sh [TASK_TOML]      # default: datasets/demo/task.toml
#
# Rows: vLLM vs HF generation (examples/s, share of identical greedy outputs), bf16 LoRA and
# QLoRA training (tokens/s, peak memory; bench/train_speed.py), 2-rank NCCL training (when two
# GPUs exist), a GRPO run with vLLM colocate (loop/train/grpo.py). It installs `.[gpu]` into a
# fresh venv ($GPU_VENV, default /tmp/evalloop-gpu-venv); every section runs under its own
# timeout and a failed or impossible one becomes a "skipped: why" row, never a failed script.
# Without CUDA (this script's preamble detects it) every row says "no CUDA".
set -u
cd "$(dirname "$0")/.."
TASK="${1:-datasets/demo/task.toml}"
VENV="${GPU_VENV:-/tmp/evalloop-gpu-venv}"
ROWS=()
row() { ROWS+=("$1|$2|$3"); }   # section | result | detail

print_table() {
  printf '\n%-22s | %-44s | %s\n' "check" "result" "detail"
  printf '%s\n' "-----------------------+----------------------------------------------+------------------"
  for r in "${ROWS[@]}"; do
    IFS='|' read -r a b c <<<"$r"
    printf '%-22s | %-44s | %s\n' "$a" "$b" "$c"
  done
}

SECTIONS=("generation vLLM vs HF" "train bf16 LoRA" "train QLoRA" "train 2-rank NCCL" "GRPO vLLM colocate")

# ---------------------------------------------------------------- preamble (CPU-detectable)
NGPU=0
if command -v nvidia-smi >/dev/null 2>&1; then
  NGPU=$(nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU' || true)
fi
if [ "${NGPU:-0}" -lt 1 ]; then
  for s in "${SECTIONS[@]}"; do row "$s" "no CUDA" "nvidia-smi finds no GPU"; done
  print_table
  exit 0
fi
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)

# ---------------------------------------------------------------- a fresh venv with .[gpu]
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV" >/dev/null 2>&1 || true
fi
INSTALL_LOG=/tmp/evalloop-gpu-install.log
if ! timeout 240 "$PY" -m pip install -q -e '.[gpu]' >"$INSTALL_LOG" 2>&1; then
  why="pip install .[gpu] failed: $(tail -1 "$INSTALL_LOG" | cut -c1-60)"
  if [ -x .venv/bin/python ]; then
    PY=.venv/bin/python; why="$why; using .venv"
  else
    for s in "${SECTIONS[@]}"; do row "$s" "skipped: no environment" "$why"; done
    print_table; exit 0
  fi
  row "environment" "fallback" "$why"
else
  row "environment" "fresh venv with .[gpu]" "$GPU_NAME x $NGPU"
fi
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD"

# run SECONDS NAME CMD...: the command prints "ROW result|detail" lines; anything else is logged
run() {
  local limit=$1 name=$2; shift 2
  local log="/tmp/evalloop-gpu-${name// /_}.log" out
  out=$(timeout "$limit" "$@" 2>"$log")
  local rc=$?
  local lines; lines=$(grep '^ROW ' <<<"$out" | sed 's/^ROW //')
  if [ -n "$lines" ]; then
    while IFS= read -r l; do row "$name" "${l%%|*}" "${l#*|}"; done <<<"$lines"
  fi
  if [ $rc -ne 0 ] && [ -z "$lines" ]; then
    local why; why=$( [ $rc -eq 124 ] && echo "timed out after ${limit}s" \
      || tail -1 "$log" | cut -c1-70)
    row "$name" "skipped: failed (rc $rc)" "$why"
  fi
}

# ---------------------------------------------------------------- generation: vLLM vs HF
run 120 "generation vLLM vs HF" "$PY" - "$TASK" <<'EOF'
import sys, time
from loop.data.tasks import load_task
from loop.models.backends import load_generator, vllm_missing
from loop.core.prompts import build_prompt
from loop.models.loading import load_tokenizer, parse_model_name
from loop.evaluation.evaluate import answers_are_json

task = load_task(sys.argv[1]); model = task.settings.cycle.base_model
if vllm_missing():
    print(f"ROW skipped: {vllm_missing()[:40]}|"); sys.exit()
examples = list(task.split("test"))[:256]
tok = load_tokenizer(parse_model_name(model))
prompts = [build_prompt(tok, e, task.settings.system_prompt) for e in examples]
gen, json_stop = task.settings.generation, answers_are_json(examples)
out = {}
for backend in ("hf", "vllm"):
    g = load_generator(backend, model)
    g.generate(prompts[:8], gen.max_new_tokens, gen.batch_size, progress=False, stop_at_json=json_stop)
    t = time.perf_counter()
    out[backend] = [o.text for o in g.generate(prompts, gen.max_new_tokens, 64, progress=False,
                                               stop_at_json=json_stop)]
    out[backend + "_s"] = time.perf_counter() - t
same = sum(a == b for a, b in zip(out["hf"], out["vllm"])) / len(prompts)
print(f"ROW HF {len(prompts) / out['hf_s']:.1f} ex/s, vLLM {len(prompts) / out['vllm_s']:.1f} ex/s"
      f"|identical greedy outputs {same:.1%} of {len(prompts)}")
EOF

# ---------------------------------------------------------------- training: bf16 LoRA and QLoRA
run 150 "train bf16 LoRA / QLoRA" bash -c '
"$0" bench/train_speed.py --task "$1" --n 128 --qlora --json > /tmp/evalloop-gpu-train.json || exit 1
"$0" - <<EOF
import json
r = json.load(open("/tmp/evalloop-gpu-train.json"))["runs"]
for name, label in (("ours", "bf16 LoRA"), ("qlora", "QLoRA nf4")):
    if name in r:
        x = r[name]
        print(f"ROW {label}: {x[\"tokens\"] / x[\"seconds\"]:.0f} tokens/s|peak {x.get(\"peak_mem_mb\", x.get(\"peak_rss_mb\", 0)):.0f} MB")
    else:
        print(f"ROW {label}: skipped|not run by train_speed.py (bitsandbytes?)")
EOF' "$PY" "$TASK"

# ---------------------------------------------------------------- 2-rank NCCL
if [ "$NGPU" -ge 2 ]; then
  run 120 "train 2-rank NCCL" bash -c '
  ws=$(mktemp -d); t0=$(date +%s)
  "$0" -m loop.train --task "$1" --workspace "$ws" --processes 2 --max-steps 10 --json \
      > "$ws/out.json" || exit 1
  "$0" -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"ROW {r[\"steps_done\"]} steps, {r[\"tokens_per_s\"]:.0f} tokens/s|peak {r[\"peak_mem_mb\"]:.0f} MB, {int(sys.argv[2])}s\")" "$ws/out.json" $(( $(date +%s) - t0 ))' "$PY" "$TASK"
else
  row "train 2-rank NCCL" "skipped: one GPU" "needs two"
fi

# ---------------------------------------------------------------- GRPO with vLLM colocate
run 150 "GRPO vLLM colocate" "$PY" - "$TASK" <<'EOF'
import sys, tempfile, time
from loop.data.tasks import load_task
from loop.models.backends import vllm_missing
from loop.core.settings import with_overrides
from loop.train.grpo import select_prompts, task_reward, train_grpo

task = load_task(sys.argv[1])
config = with_overrides(task.settings, "training", method="grpo", max_steps=4, epochs=None,
                        batch_size=16, grpo_num_generations=4, save_steps=4)
reward = task_reward(task)
prompts = select_prompts(list(reward.examples.values()), [], 64, 0)
t = time.perf_counter()
r = train_grpo(task.settings.cycle.base_model, prompts, reward, tempfile.mkdtemp(), config,
               task.settings.generation.max_new_tokens, progress=False)
rewards = [x.reward for x in r.logs if x.reward is not None]
mode = "vLLM colocate" if not vllm_missing() else "HF generate (no vLLM)"
print(f"ROW {r.steps_done} steps in {time.perf_counter() - t:.0f}s, {mode}"
      f"|reward {rewards[0]:.3f} -> {rewards[-1]:.3f}, peak {r.peak_mem_mb:.0f} MB")
EOF

print_table
exit 0

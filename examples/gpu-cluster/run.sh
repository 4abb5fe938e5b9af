#!/usr/bin/env bash
# CAI at full size on one 8-GPU node, stage by stage: the model is served by vLLM with tensor
# parallelism over the 8 GPUs whenever something is generated or labelled (behind `openai:`), and
# trained with `accelerate launch` under DeepSpeed ZeRO-3 (or FSDP) over the same 8 GPUs in
# between. The server and the trainers take turns: each needs every GPU.
#
#   MODEL=/models/Llama-3.1-70B-Instruct bash examples/gpu-cluster/run.sh
#   ACCEL=examples/accelerate/fsdp.yaml MODEL=... bash examples/gpu-cluster/run.sh
#   LIMIT=32 MAX_STEPS=5 MODEL=/models/SmolLM2-1.7B-Instruct bash examples/gpu-cluster/run.sh  # a smoke test
#
# NOT RUN: no GPU was available where this was written (see README.md). Every step resumes when
# the script is run again (JSONL outputs skip finished records; trainers restart from their last
# checkpoint), so a killed job continues where it stopped.
set -euo pipefail
MODEL=${MODEL:?set MODEL to a Hugging Face id or a local model folder}
OUT=${OUT:-runs/cluster}
TP=${TP:-8}                                           # GPUs vLLM shards the model over
ACCEL=${ACCEL:-examples/accelerate/deepspeed-zero3.yaml}  # 8 processes, ZeRO-3, bf16
PORT=${PORT:-8000}
CAI=${CAI:-cai}
LIMIT=${LIMIT:-}                                      # prompts per stage (empty: all)
MAX_STEPS=${MAX_STEPS:-}                              # optimiser steps per trainer (empty: by epochs)
VLLM_ARGS=${VLLM_ARGS:---max-model-len 8192 --gpu-memory-utilization 0.90}
URL=http://127.0.0.1:$PORT/v1
lim=(); [[ -n "$LIMIT" ]] && lim=(--limit "$LIMIT")
steps=(); [[ -n "$MAX_STEPS" ]] && steps=(--max-steps "$MAX_STEPS")
mkdir -p "$OUT"

SERVER_PID=
serve() {  # serve MODEL_DIR NAME: vLLM's OpenAI server, tensor parallel over $TP GPUs
  "$CAI" serve -m "vllm:$1" --port "$PORT" --served-model-name "$2" \
      --vllm-args "--tensor-parallel-size $TP $VLLM_ARGS" >"$OUT/serve-$2.log" 2>&1 &
  SERVER_PID=$!
  echo "== serving $1 as $2 (log: $OUT/serve-$2.log)" >&2
  for _ in $(seq 1 180); do  # a 70B model takes minutes to load
    curl -sf "$URL/models" >/dev/null && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited; see $OUT/serve-$2.log" >&2; exit 1; }
    sleep 10
  done
  echo "the server did not answer within 30 minutes" >&2; exit 1
}
stop() {  # give the GPUs back to the trainers
  [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" && wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap stop EXIT
train() { accelerate launch --config_file "$ACCEL" -m cai "$@" --bf16 "${steps[@]}"; }

# 1. SL-CAI data: the base model answers, critiques and revises, through the server.
if [[ ! -e "$OUT/sl-cai/model/cai_run.json" ]]; then
  serve "$MODEL" base
  "$CAI" critique -m "openai:$URL#base" --data redteam "${lim[@]}" --rounds 2 --filter \
      --batch-size 256 -o "$OUT/critique.jsonl"
  "$CAI" data stats "$OUT/critique.jsonl"          # kept/dropped revisions and why
  stop
fi

# 2. SL-CAI model: full fine-tuning, parameters sharded over the 8 GPUs.
train sft -m "$MODEL" --data "$OUT/critique.jsonl" -o "$OUT/sl-cai/model" --lr 1e-5 --epochs 1 \
    --batch-size 4 --grad-accum 1

# 3. Preference pairs from the SL-CAI model, served: contrastive (RLCD) pairs, labelled by how
#    they were made, and checked by the same model as judge (--judge-filter).
if [[ ! -e "$OUT/dpo/model/cai_run.json" ]]; then
  serve "$OUT/sl-cai/model" sl-cai
  "$CAI" label -m "openai:$URL#sl-cai" --judge "openai:$URL#sl-cai" --data redteam "${lim[@]}" \
      --pairs contrastive -c hhh --judge-filter --batch-size 256 -o "$OUT/prefs.jsonl"
  stop
fi

# 4. RL-CAI by DPO on those pairs, sharded again. (A PM + PPO is the other route: `cai reward`
#    and `cai ppo` as in examples/train_end_to_end.sh, under the same `accelerate launch`.)
train dpo -m "$OUT/sl-cai/model" --data "$OUT/prefs.jsonl" -o "$OUT/dpo/model" --lr 5e-7 \
    --epochs 1 --batch-size 2 --grad-accum 1 --beta 0.1

# 5. Evals of the final model, served.
serve "$OUT/dpo/model" final
for task in harmlessness over-refusal; do
  "$CAI" eval "$task" -m "openai:$URL#final" "${lim[@]}" -o "$OUT/eval/$task.json"
done
stop
"$CAI" report "$OUT" -o "$OUT/report.html"
echo "report: $OUT/report.html" >&2

#!/usr/bin/env bash
# The training half of Constitutional AI on the embedded model, end to end (issue 9):
#   1. SL-CAI data: 200 red-team prompts answered, critiqued and revised; the model's own answers
#      to the built-in helpful prompts, to mix in so that it does not turn evasive;
#   2. SFT on both (the SL-CAI model);
#   3. AI preference labels: pairs of the SL-CAI model's answers, labelled by a feedback model;
#   4. the PM (`cai reward`) on those pairs, its accuracy on human labels, and its mean score of the
#      SL-CAI answers per revision round;
#   5. 20 PPO steps of the SL-CAI model against that PM (LoRA: the reference is the same weights with
#      the adapters off);
#   6. DPO of the SL-CAI model on the same pairs (soft labels per pair);
# and checks that each trained folder answers through `cai generate -m hf:DIR`.
#
#   bash examples/train_end_to_end.sh                  # full run (about 1.5 hours on a 2-core CPU)
#   QUICK=1 bash examples/train_end_to_end.sh          # 16 prompts, a few steps: a smoke test
#   MODEL=hf:smollm2-135m OUT=runs/e2e bash examples/train_end_to_end.sh
#
# Every step resumes when run again (JSONL outputs skip finished records, trainers resume from
# their last checkpoint), so a killed run continues where it stopped. Curves: $OUT/*/curves/.
set -euo pipefail
MODEL=${MODEL:-smollm2-135m}
OUT=${OUT:-runs/e2e}
CAI=${CAI:-cai}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
if [[ -n "${QUICK:-}" ]]; then
  N_RED=16; N_HELP=8; N_LABEL=8; PM_EVAL=(--human-limit 20); TRAIN=(--max-steps 4 --batch-size 4)
  GEN=(--answer-max-tokens 96 --critique-max-tokens 64 --revision-max-tokens 96); PPO=(--max-steps 2 --batch-size 2 --minibatch-size 2)
  DPO=(--max-steps 2 --batch-size 4)
else
  # 200 SL-CAI records; 100 prompts x 3 answers = 300 labelled pairs; one epoch each, sequences cut
  # at 384 tokens: what a 2-core CPU trains in minutes rather than hours.
  N_RED=200; N_HELP=64; N_LABEL=100; PM_EVAL=(--human-limit 100); TRAIN=(--epochs 1 --batch-size 8 --max-length 384)
  GEN=(); PPO=(--max-steps 20 --batch-size 8 --minibatch-size 4)
  # DPO runs the policy and its reference over both answers of every pair: about 2 min a step of 8
  # pairs on a 2-core CPU with full weights and 384 tokens, so a full epoch (38 steps) takes over an
  # hour. With LoRA (the reference is the same weights with adapters off) and 256 tokens a step took
  # 19 s; 12 steps see 96 of the 300 pairs. DPO_ARGS="--lora --epochs 1 --batch-size 8 --max-length 256"
  # runs the whole epoch (by those figures about 16 min there, reference log-probs included; not run).
  DPO=(${DPO_ARGS:---lora --max-steps 12 --batch-size 8 --max-length 256})
fi

echo "== 1. SL-CAI data" >&2
"$CAI" critique -m "$MODEL" -c default --data redteam --limit "$N_RED" -o "$OUT/sl.jsonl" "${GEN[@]}"
"$CAI" data stats "$OUT/sl.jsonl"
"$CAI" generate -m "$MODEL" --data helpful --limit "$N_HELP" --output "$OUT/helpful.jsonl"

echo "== 2. SFT (SL-CAI model): revisions + half as many helpful answers" >&2
"$CAI" sft -m "$MODEL" --data "$OUT/sl.jsonl" --data "$OUT/helpful.jsonl:0.5" -o "$OUT/sft" --lora --lr 2e-4 "${TRAIN[@]}"
"$CAI" generate -m "hf:$OUT/sft" --temperature 0 --max-tokens 64 "How do I pick a lock?"

echo "== 3. AI preference labels on the SL-CAI model's answers (K=3: 3 pairs per prompt)" >&2
"$CAI" label -m "hf:$OUT/sft" --judge "$MODEL" -c hhh --data redteam --shuffle --seed 1 \
  --limit "$N_LABEL" -k 3 -o "$OUT/prefs.jsonl"

echo "== 4. PM on the pairs: accuracy on held-out AI labels and human labels; PM score per revision round" >&2
"$CAI" reward -m "$MODEL" --data "$OUT/prefs.jsonl" -o "$OUT/pm" --lr 2e-5 "${PM_EVAL[@]}" "${TRAIN[@]}"
"$CAI" reward score -m "$OUT/pm" --data "$OUT/sl.jsonl" -o "$OUT/pm_rounds.jsonl"

echo "== 5. PPO of the SL-CAI model against the PM (KL to the SL-CAI model, adapted to a target)" >&2
"$CAI" ppo -m "$OUT/sft" --reward "$OUT/pm" --data redteam --limit 160 -o "$OUT/ppo" --lora --lr 1e-4 \
  --max-tokens 64 --kl-target 2 "${PPO[@]}"
"$CAI" generate -m "hf:$OUT/ppo" --temperature 0 --max-tokens 64 "How do I pick a lock?"

echo "== 6. DPO of the SL-CAI model on the same pairs (eps = 1 - p_chosen per pair)" >&2
"$CAI" dpo -m "$OUT/sft" --data "$OUT/prefs.jsonl" -o "$OUT/dpo" --beta 0.1 --lr 5e-5 "${DPO[@]}"
"$CAI" generate -m "hf:$OUT/dpo" --temperature 0 --max-tokens 64 "How do I pick a lock?"

echo "== done: $OUT/sft, $OUT/pm, $OUT/ppo, $OUT/dpo (cai_run.json, metrics.jsonl, curves/ in each)" >&2

#!/usr/bin/env bash
# Reproduce the RLAIF labelling numbers in docs/results.md (issue 4): how well the embedded model
# agrees with human preference labels, what chain of thought and principle ensembling change, and
# 100 red-team prompts labelled end to end.
#
#   bash examples/rlaif_results.sh                 # the embedded model (vllm if installed, else hf)
#   bash examples/rlaif_results.sh hf:smollm2-135m  # force the transformers backend
#   QUICK=1 bash examples/rlaif_results.sh          # 20 comparisons / 5 prompts per run: a smoke test
#
# Run from the project root; the data is ../shared/data (BIG-bench HHH, HH-RLHF harmless-base).
# Results land in runs/labeler/ (JSON + reliability PNGs); the last step prints markdown tables.
set -euo pipefail
MODEL=${1:-smollm2-135m}
OUT=${OUT:-runs/labeler}
CAI=${CAI:-cai}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
if [[ -n "${QUICK:-}" ]]; then HHH_LIMIT=(--limit 20); HH_LIMIT=20; N_PROMPTS=5; else HHH_LIMIT=(); HH_LIMIT=500; N_PROMPTS=100; fi

ev() { local name=$1; shift; echo "== $name" >&2; "$CAI" eval labeler -m "$MODEL" --output "$OUT/$name.json" "$@"; }

# BIG-bench HHH (221 comparisons), per category. The default method: one sampled principle of the
# hhh constitution per comparison, both (A)/(B) orders averaged.
ev hhh                --data hhh "${HHH_LIMIT[@]}" --plot "$OUT/hhh.png"
ev hhh-no-swap        --data hhh "${HHH_LIMIT[@]}" --no-swap
ev hhh-all-principles --data hhh "${HHH_LIMIT[@]}" --principles all
ev hhh-cot            --data hhh "${HHH_LIMIT[@]}" --cot --plot "$OUT/hhh-cot.png"
ev hhh-cot-all        --data hhh "${HHH_LIMIT[@]}" --cot --principles all

# HH-RLHF harmless-base: a seeded random subset of 500 pairs; agreement with the human choice.
ev hh-rlhf                --data hh-rlhf --limit "$HH_LIMIT" --plot "$OUT/hh-rlhf.png"
ev hh-rlhf-all-principles --data hh-rlhf --limit "$HH_LIMIT" --principles all
ev hh-rlhf-cot            --data hh-rlhf --limit "$HH_LIMIT" --cot

# 100 red-team prompts labelled end to end (the tutorial's exercise 3): 2 answers per prompt from
# the policy, labelled by the same model under the hhh constitution.
echo "== label: $N_PROMPTS redteam prompts" >&2
"$CAI" label -m "$MODEL" -c hhh --data redteam --limit "$N_PROMPTS" -o "$OUT/prefs-redteam.jsonl"

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from cai.evals.labeler import MARKDOWN_HEADER, result_markdown

out = Path(sys.argv[1])
print(MARKDOWN_HEADER)
for p in sorted(out.glob("*.json")):
    print(result_markdown(json.loads(p.read_text()), p.stem))
recs = [json.loads(l) for l in (out / "prefs-redteam.jsonl").read_text().splitlines() if l.strip()]
if recs:
    n = len(recs)
    print(f"\nlabelled pairs: {n} from {len({r['prompt_id'] for r in recs})} prompts; "
          f"mean p_chosen {sum(r['p_chosen'] for r in recs) / n:.3f}; "
          f"orders agree on {sum(bool(r['agree']) for r in recs)}/{n}; ties {sum(r['tie'] for r in recs)}")
PY

#!/bin/bash
# The experiment at the compare-cpu training size, evals on 200 prompts per set (issue 15 item 8).
cd /work/main
exec .venv/bin/cai run examples/compare.yaml -o runs/compare200 \
  --set generate.limit=64 --set generate.max_tokens=128 \
  --set critique.limit=64 --set critique.answer_max_tokens=128 --set critique.critique_max_tokens=96 \
  --set critique.revision_max_tokens=128 --set sft.epochs=1 --set label.limit=64 --set reward.human_limit=50 \
  --set ppo.max_steps=10 --set ppo.batch_size=4 --set ppo.minibatch_size=2 --set ppo.max_tokens=48 \
  --set 'eval.tasks=[harmlessness, over-refusal, helpfulness, hhh]' --set eval.limit=200 \
  --set eval.helpfulness.max_tokens=128

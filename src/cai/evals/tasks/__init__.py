"""``cai eval TASK``: one module per evaluation task, each writing the shared result shape
(:mod:`cai.evals.results`) plus per-item records beside it."""

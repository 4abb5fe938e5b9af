"""``cai eval``: evaluations, one subcommand each. ``cai eval labeler`` measures how often the AI
preference labeller agrees with human labels; ``cai eval grader`` how often a grader agrees with
human refusal labels; ``harmlessness`` and ``over-refusal`` grade a model's answers; ``ifeval``
checks its answers against verifiable instructions."""

from __future__ import annotations

import argparse

LABELER_EPILOG = """examples:
  cai eval labeler -m smollm2-135m --data hhh                   (BIG-bench HHH, per category)
  cai eval labeler -m smollm2-135m --data hh-rlhf --limit 500   (HH-RLHF harmless-base pairs, check pool)
  cai eval labeler -m hf:PATH --data 438HHHEvaluations.jsonl    (CAI paper multiple-choice format)
  cai eval labeler -m smollm2-135m --data hhh --cot --principles all --plot reliability.png
The method flags (-c, --principles, --few-shot, --cot, --no-swap) mean what they mean for
`cai label`: the same code labels both."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluations (labeller agreement with humans, ...)",
                       description="Evaluations. Run `cai eval EVAL --help` for one of them.")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
    evals = p.add_subparsers(dest="eval_command", metavar="EVAL")
    _register_labeler(evals)
    _register_graded(evals)
    _register_loglik_tasks(evals)
    _register_judged_tasks(evals)
    _register_ifeval(evals)


def _register_labeler(evals: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.evals.labeler import LabelerEvalConfig

    p = evals.add_parser(
        "labeler", help="agreement of the AI preference labeller with human-labelled comparisons",
        description="Scores the labelling method of `cai label` on human-labelled comparisons: accuracy with a "
        "95% bootstrap interval, position-bias rate, calibration (ECE, optional reliability diagram) and the "
        "majority and random baselines. Writes a JSON result and prints a table (per category for hhh).",
        epilog=LABELER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(p, LabelerEvalConfig)
    p.set_defaults(func=_labeler)


def _labeler(args: argparse.Namespace) -> int:
    import sys

    from rich.console import Console

    from cai.config import stage_config
    from cai.evals.labeler import (LabelerEvalConfig, check_outputs, evaluate_labeler, examples_path,
                                   plot_reliability, result_table, write_result)

    config = stage_config(LabelerEvalConfig, args)
    out = check_outputs(config)  # every path this run writes, before the model loads
    result = evaluate_labeler(config, show_progress=args.progress, examples=examples_path(out))
    out = write_result(result, out)
    # Off a terminal rich would wrap to 80 columns and cut the numbers; keep the table whole.
    Console(width=None if sys.stdout.isatty() else 140).print(result_table(result))
    print(f"wrote {out}", file=sys.stderr)
    if config.plot:
        print(f"wrote {plot_reliability(result, config.plot)}", file=sys.stderr)
    return 0


GRADER_EPILOG = """examples:
  cai eval grader --grader refusal-strings --data ../shared/data/xstest/xstest_v2_completions_llama2new.csv -o g.json
  cai eval grader --grader judge --judge smollm2-135m --data xstest_v2_completions_llama2new.csv -o judge.json
  cai eval grader --grader pm:runs/pm --threshold 0.5 --data labelled.jsonl -o pm.json
Other evals cite the result with --grader-agreement g.json. Running the same command again resumes."""

TASK_EPILOG = {
    "harmlessness": """examples:
  cai eval harmlessness -m smollm2-135m --data advbench --limit 200 -o harm.json
  cai eval harmlessness -m hf:runs/sl-cai --grader judge --judge smollm2-135m --grader-agreement judge.json -o h.json
  cai eval harmlessness -m smollm2-135m --data ../shared/data/harmbench/harmbench_behaviors_text_val.csv -o hb.json
--data: advbench (ships with cai), or a HarmBench / JailbreakBench / forbidden-questions CSV, or any
prompt file (.jsonl/.csv/.txt). Running the same command again resumes.""",
    "over-refusal": """examples:
  cai eval over-refusal -m smollm2-135m -o xstest.json
  cai eval over-refusal -m hf:runs/rl-cai --grader judge --judge smollm2-135m --grader-agreement judge.json -o x.json
--data: xstest (ships with cai) or a CSV with XSTest's columns (id, prompt, type, label).
Running the same command again resumes.""",
}


def _register_graded(evals: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.evals.graders.agreement import GraderEvalConfig
    from cai.evals.tasks.harmlessness import HarmlessnessConfig
    from cai.evals.tasks.over_refusal import OverRefusalConfig

    p = evals.add_parser(
        "grader", help="agreement of a grader (refusal-strings, judge, pm) with human refusal labels",
        description="Grades answers that people have labelled (refused or complied) and reports accuracy, "
        "Cohen's kappa, the confusion matrix and (for graders with a score) AUROC, each with a 95% bootstrap "
        "interval. A grader is trusted only as far as this says.",
        epilog=GRADER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(p, GraderEvalConfig)
    p.set_defaults(func=_grader)
    for name, cls, help, description in (
        ("harmlessness", HarmlessnessConfig, "answers to harmful requests, graded: harmless rate, explained refusals",
         ("The model answers held-out harmful requests; a grader labels each answer. Reports the harmless rate, "
          "the refusal rate and (with the judge grader) the share of refusals that explain themselves rather "
          "than evade, overall and per category, with 95% bootstrap intervals.")),
        ("over-refusal", OverRefusalConfig, "XSTest: compliance on safe prompts, refusal on unsafe ones",
         ("The model answers XSTest's 250 safe prompts (which it should answer) and 200 unsafe contrasts (which "
          "it should refuse); a grader says which answers refuse. Reports both rates, overall and per prompt "
          "type, with 95% bootstrap intervals."))):
        t = evals.add_parser(name, help=help, description=description, epilog=TASK_EPILOG[name],
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        add_stage_arguments(t, cls)
        t.set_defaults(func=_task, task_name=name)


def _print_result(result, out) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    g = result.grader or {}
    agreement = g.get("agreement")
    title = f"{result.task} · {result.model or '-'} · grader {g.get('spec', '-')}"
    if result.task != "grader":
        title += (f" (kappa {agreement['kappa']['value']:.2f} on {agreement['n']} human labels)" if agreement
                  else " (agreement not measured: pass --grader-agreement)")
    table = Table(title=title)
    for col in ("metric", "value", "95% CI", "n"):
        table.add_column(col, justify="left" if col == "metric" else "right", no_wrap=True)
    for name, m in result.metrics.items():
        ci = f"{m.ci[0]:.3f}-{m.ci[1]:.3f}" if m.ci else "-"
        table.add_row(name, f"{m.value:.3f}", ci, str(m.n or "-"))
    Console(width=None if sys.stdout.isatty() else 140).print(table)
    print(f"wrote {out}", file=sys.stderr)


def _grader(args: argparse.Namespace) -> int:
    from cai.config import stage_config
    from cai.evals.graders.agreement import GraderEvalConfig, evaluate_grader
    from cai.evals.results import write_result

    config = stage_config(GraderEvalConfig, args)
    result = evaluate_grader(config, show_progress=args.progress)
    _print_result(result, write_result(result, config.output))
    return 0


def _task(args: argparse.Namespace) -> int:
    from cai.config import stage_config
    from cai.evals.results import write_result

    if args.task_name == "harmlessness":
        from cai.evals.tasks.harmlessness import HarmlessnessConfig as Cls
        from cai.evals.tasks.harmlessness import evaluate_harmlessness as run
    else:
        from cai.evals.tasks.over_refusal import OverRefusalConfig as Cls
        from cai.evals.tasks.over_refusal import evaluate_over_refusal as run
    config = stage_config(Cls, args)
    result = run(config, show_progress=args.progress)
    _print_result(result, write_result(result, config.output))
    return 0
# -- evals-b: hhh, truthfulqa (log-likelihood), helpfulness, pairwise (judged) ---------------------------

LOGLIK_EPILOG = """examples:
  cai eval hhh -m smollm2-135m -o results/hhh.json
  cai eval truthfulqa -m hf:runs/sft -o results/truthfulqa.json --limit 200
No judge: the model's own log-likelihood of each answer decides. Running the same command again
resumes from OUT.examples.jsonl."""

JUDGED_EPILOG = """examples:
  cai eval helpfulness -m hf:runs/rl --baseline smollm2-135m --judge smollm2-135m -o results/help.json
  cai eval helpfulness -m hf:runs/rl --baseline hf:runs/sft --turns 2 --limit 40
  cai eval pairwise -m smollm2-135m -m hf:runs/sft -m hf:runs/rl --judge smollm2-135m -o results/elo.json
The judge labels each pair as `cai label` does (-c, --principles, --few-shot, --cot, --no-swap mean the
same), in both orders unless --no-swap. Running the same command again resumes."""


def _register_loglik_tasks(evals: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.evals.tasks.hhh import HHHConfig
    from cai.evals.tasks.truthfulqa import TruthfulQAConfig

    p = evals.add_parser(
        "hhh", help="BIG-bench HHH: does the model's log-likelihood prefer the better reply (per category)",
        description="Scores both replies of every BIG-bench HHH comparison as the assistant's turn with the model's "
        "own log-likelihood (summed, and per byte) and reports how often the preferred reply wins, per category, "
        "with 95% bootstrap intervals.", epilog=LOGLIK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(p, HHHConfig)
    p.set_defaults(func=_hhh)
    p = evals.add_parser(
        "truthfulqa", help="TruthfulQA MC1 and MC2 by the model's log-likelihood",
        description="Scores every TruthfulQA answer as the assistant's reply to the question and reports MC1 (the "
        "best answer beats all incorrect ones) and MC2 (probability mass on correct answers), with 95% bootstrap "
        "intervals.", epilog=LOGLIK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(p, TruthfulQAConfig)
    p.set_defaults(func=_truthfulqa)


def _register_judged_tasks(evals: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.evals.tasks.helpfulness import HelpfulnessConfig
    from cai.evals.tasks.pairwise import PairwiseConfig

    p = evals.add_parser(
        "helpfulness", help="MT-Bench: win rate against a baseline model, judged pairwise in both orders",
        description="Both models answer the MT-Bench questions (first turn, or both with --turns 2); a judge model "
        "compares each pair of answers in both orders by scoring (A)/(B), as `cai label` does, and the win rate "
        "(ties count half) is reported with a 95% bootstrap interval, per category.",
        epilog=JUDGED_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(p, HelpfulnessConfig)
    p.set_defaults(func=_helpfulness)
    p = evals.add_parser(
        "pairwise", help="Elo scores of any number of models from judged pairwise comparisons",
        description="Every model answers the same prompts; a judge compares every pair of models on every prompt "
        "(both orders); a Bradley-Terry fit turns the comparisons into Elo scores, with 95% intervals from a "
        "bootstrap over prompts. How the CAI paper compares snapshots.",
        epilog=JUDGED_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", dest="models", action="append", default=argparse.SUPPRESS, metavar="MODEL",
                   help="a model to compare; repeat for each (at least two)")
    add_stage_arguments(p, PairwiseConfig, skip=("models", "model"))
    p.set_defaults(func=_pairwise)


IFEVAL_EPILOG = """examples:
  cai eval ifeval -m smollm2-135m -o results/ifeval.json
  cai eval ifeval -m hf:runs/rl --limit 100 --max-tokens 512 -o rl/ifeval.json
No judge: each prompt's instructions ("no commas", "at least 300 words", "answer in JSON", ...) are
checked by rule. Strict takes the answer as it is; loose also accepts it with its first and/or last
line or its * markdown removed (IFEval's two criteria). Prompt-level: every instruction of a prompt
followed; instruction-level: share of all instructions followed. --data: ifeval (541 prompts, ships
with cai) or a JSONL in IFEval's format. Running the same command again resumes."""


def _register_ifeval(evals: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.evals.tasks.ifeval import IFEvalConfig

    p = evals.add_parser(
        "ifeval", help="IFEval: does the model follow verifiable instructions (no judge; strict and loose)",
        description="The model answers IFEval's 541 prompts, each with one to three instructions a program can "
        "check (834 in all, 25 types). Reports prompt-level and instruction-level accuracy, strict and loose, each "
        "with a 95% bootstrap interval over prompts, and per instruction type in the result's breakdown.",
        epilog=IFEVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(p, IFEvalConfig)
    p.set_defaults(func=_ifeval)


def _ifeval(args: argparse.Namespace) -> int:
    from cai.config import stage_config
    from cai.evals.tasks.ifeval import IFEvalConfig, evaluate_ifeval

    config = stage_config(IFEvalConfig, args)
    return _finish(evaluate_ifeval(config, show_progress=args.progress), config.output, "ifeval")


def _finish(result, output: str, task: str) -> int:
    import sys

    from rich.console import Console

    from cai.evals.compare import metrics_table
    from cai.evals.results import write_result
    from cai.evals.tasks.itemrun import result_path

    out = write_result(result, result_path(output, task))
    Console(width=None if sys.stdout.isatty() else 140).print(metrics_table([result]))
    print(f"wrote {out} (per-item records: {out.parent / result.examples})", file=sys.stderr)
    return 0


def _hhh(args: argparse.Namespace) -> int:
    from cai.config import stage_config
    from cai.evals.tasks.hhh import HHHConfig, evaluate_hhh

    config = stage_config(HHHConfig, args)
    return _finish(evaluate_hhh(config, show_progress=args.progress), config.output, "hhh")


def _truthfulqa(args: argparse.Namespace) -> int:
    from cai.config import stage_config
    from cai.evals.tasks.truthfulqa import TruthfulQAConfig, evaluate_truthfulqa

    config = stage_config(TruthfulQAConfig, args)
    return _finish(evaluate_truthfulqa(config, show_progress=args.progress), config.output, "truthfulqa")


def _helpfulness(args: argparse.Namespace) -> int:
    from cai.config import stage_config
    from cai.evals.tasks.helpfulness import HelpfulnessConfig, evaluate_helpfulness

    config = stage_config(HelpfulnessConfig, args)
    return _finish(evaluate_helpfulness(config, show_progress=args.progress), config.output, "helpfulness")


def _pairwise(args: argparse.Namespace) -> int:
    from cai.config import stage_config
    from cai.evals.tasks.pairwise import PairwiseConfig, evaluate_pairwise

    config = stage_config(PairwiseConfig, args)
    return _finish(evaluate_pairwise(config, show_progress=args.progress), config.output, "pairwise")

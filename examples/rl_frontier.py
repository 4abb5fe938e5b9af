"""RL on pairs that carry signal, from the best SL-CAI model of the dose study (issue 15, item 4):
does RL move the frontier, i.e. is the model more harmless at equal or better safe compliance?

    python examples/dose_response.py --out runs/dose --doses 50        # the SL-CAI model first
    python examples/rl_frontier.py --study runs/dose --sl sft-50       # then this (resumable)
    python examples/rl_frontier.py --study runs/dose --sl sft-50 --arms dpo,pm,ppo

From the best SL-CAI recipe (docs/results.md, "RL from the rebuilt N = 66 model"), one arm per call; the
table and plot keep the arms of earlier calls:

    python examples/rl_frontier.py --study runs/dose2g --sl sft-66 --arms dpo --harmful-pairs 371 \
        --helpful-ratio 1 --refuse-then-comply
    python examples/rl_frontier.py --study runs/dose2g --sl sft-66 --arms pm,ppo --harmful-pairs 371 \
        --helpful-ratio 1 --ppo-steps 40 --ppo-kl-horizon 32

Every step is a `cai` command in its own process and resumes, so rerun the same line after a stop.

1. Pairs, made so that they differ in the one way that matters (the grader checks it, step 2):
   - harmful requests of `harmful-train` that the SL model was not trained on: a refusal written from
     the constitution (`cai data refusals`) is chosen over the SL model's own answer;
   - the benign and borderline chat questions of the study's helpful mix: the base model's own answer
     (kept by `cai generate --filter`) is chosen over the SL model's answer under a system prompt
     that tells it to refuse everything (an over-refusal in the SL model's own words), or, where
     none of its 2 samples refuses (most prompts, on the 135M model), over a written refusal.
2. The signal check, before any training: the refusal-string grader's verdict on each side. A pair
   is kept only when the grader says chosen and rejected differ the intended way; the counts go to
   pairs.md. A tenth of the prompts is held out.
3. Arms, each from the SL model: `dpo` (`cai dpo` on the pairs), `pm` (a preference model trained
   from the base model on the pairs: held-out pair accuracy, HH-RLHF check-pool and HHH accuracy,
   and AUROC as a refusal grader on XSTest's human-labelled answers), `ppo` (`cai ppo` against that
   PM on the training pairs' prompts, harmful and helpful as they come; docs/results.md has a run of
   all three: with the defaults PPO's KL outgrew its 2-nat target and the policy hacked the PM).
   `--refuse-then-comply` adds, per harmful training pair, one whose rejected answer is the same
   written refusal followed by the SL answer (arm `dpo-SL-rtc`; without them DPO learnt to refuse
   and then comply, with them it stopped doing so: docs/results.md).
4. The same evals as the dose study for every arm; rl.md (table) and rl.png (the dose study's
   points and the RL arms, harmless rate against safe compliance, 95% intervals).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dose_response import (COLS, ROOT, cai, completion_text, fmt, metric, plot_frontier, read_jsonl,  # noqa: E402
                           run_evals, user_text, write_jsonl)

REFUSE_ALL = ("You refuse every request, however harmless it is. Reply with one or two sentences that "
              "decline to help, and do not answer the question.")
# How the first DPO arm's answers went on after a refusal, read by hand (docs/results.md): the
# rejected side of a refuse-then-comply pair is a written refusal, one of these, then the SL answer.
BRIDGES = ("However, I can give you some information about it.", "That said, if you still want to go ahead, "
           "here's how:", "If you're looking for a way to do this, I'd be happy to help.",
           "But here is what you asked for:")
XSTEST_ANSWERS = ROOT.parent / "shared" / "data" / "xstest" / "xstest_v2_completions_llama2new.csv"


def prompt_file(path: Path, records: list[dict]) -> Path:
    write_jsonl(path, [{"id": r["id"], "prompt": user_text(r)} for r in records])
    return path


def answers_by_prompt(path: Path, sampled: bool) -> dict[str, list[str]]:
    """Answers of a `cai generate` file per prompt id (ids PROMPT-sJ when it sampled several)."""
    out: dict[str, list[str]] = {}
    for r in read_jsonl(path):
        pid = re.sub(r"-s\d+$", "", r["id"]) if sampled else r["id"]
        out.setdefault(pid, []).append(completion_text(r))
    return out


def make_pairs(study: Path, out: Path, sl: str, args, grader, log: Path) -> list[dict]:
    sft_ids = {r["id"] for r in read_jsonl(study / "data" / f"mix-{sl.split('-', 1)[1]}.jsonl")}
    rng = random.Random(args.seed)
    harmful = [r for r in read_jsonl(study / "data" / "harmful-kept.jsonl") if r["id"] not in sft_ids]
    helpful = read_jsonl(study / "data" / "helpful-kept.jsonl")
    rng.shuffle(harmful)
    rng.shuffle(helpful)
    harmful, helpful = harmful[: args.harmful_pairs], helpful[: args.helpful_pairs]
    sl_spec = str(study / sl)
    harm_ans = out / "sl-answers-harmful.jsonl"
    cai("generate", "-m", sl_spec, "--data", str(prompt_file(out / "prompts-harmful.jsonl", harmful)),
        "--field", "prompt", "--max-tokens", "128", "--temperature", "0", "-o", str(harm_ans), log=log)
    refusals = out / "sl-refusals-helpful.jsonl"
    cai("generate", "-m", sl_spec, "--data", str(prompt_file(out / "prompts-helpful.jsonl", helpful)),
        "--field", "prompt", "--system-prompt", REFUSE_ALL, "--max-tokens", "64", "--temperature", "0.7",
        "-k", "2", "--seed", str(args.seed), "-o", str(refusals), log=log)

    def refuses(prompt: str, texts: list[str]) -> list[bool]:
        return [g.refused for g in grader.grade([[{"role": "user", "content": prompt}]] * len(texts), texts)]

    from cai.refusals import load_refusals, pick

    written, _ = load_refusals("refusals")
    pairs, counts = [], {}
    for side, records, answers in (("harmful", harmful, answers_by_prompt(harm_ans, False)),
                                   ("helpful", helpful, answers_by_prompt(refusals, True))):
        c = counts[side] = {"prompts": len(records), "chosen_refuses": 0, "rejected_refuses": 0,
                            "rejected_written": 0, "kept": 0}
        for r in records:
            prompt, chosen = user_text(r), completion_text(r)
            cands = [a for a in answers.get(r["id"], []) if a.strip()]
            verdicts = refuses(prompt, [chosen] + cands)
            c["chosen_refuses"] += verdicts[0]
            c["rejected_refuses"] += any(verdicts[1:])
            want = side == "harmful"  # harmful: chosen refuses, rejected does not; helpful: the reverse
            rejected = next((a for a, v in zip(cands, verdicts[1:]) if v != want), None)
            source = "sl-answer" if want else "sl-refusal-under-system-prompt"
            if rejected is None and not want:
                # The 135M SL model rarely refuses even when told to (pairs.md), so the over-refusal
                # is one of the written refusals instead, picked by the prompt's id as for SFT.
                rejected, source = written[pick(r["id"], len(written))], "written-refusal"
                c["rejected_written"] += 1
            if verdicts[0] == want and rejected is not None:
                c["kept"] += 1
                pairs.append({"id": f"{side}-{r['id']}", "prompt": [{"role": "user", "content": prompt}],
                              "chosen": [{"role": "assistant", "content": chosen}],
                              "rejected": [{"role": "assistant", "content": rejected}], "p_chosen": 1.0,
                              "provenance": {"from": f"rl-frontier-{side}", "source_id": r["id"], "sl_model": sl,
                                             "chosen": (r.get("provenance") or {}).get("from"),
                                             "rejected": source, "checked_by": "refusal-strings:extended"}})
    if args.helpful_ratio is not None:
        # The written refusals are chosen on one side and rejected on the other; with more helpful
        # pairs than harmful ones the net push is against refusing at all (measured: docs/results.md).
        n_harm = counts["harmful"]["kept"]
        helpful_pairs = [p for p in pairs if p["id"].startswith("helpful-")][: int(args.helpful_ratio * n_harm)]
        pairs = [p for p in pairs if p["id"].startswith("harmful-")] + helpful_pairs
        counts["helpful"]["kept"] = len(helpful_pairs)
    lines = ["| side | prompts | chosen refuses | SL answers: any refuses | rejected is a written refusal | pairs kept |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {s} | {c['prompts']} | {c['chosen_refuses']} | {c['rejected_refuses']} | {c['rejected_written']} | "
              f"{c['kept']} |" for s, c in counts.items()]
    (out / "pairs.md").write_text("Signal check (refusal-strings:extended) of the constructed pairs.\n\n"
                                  + "\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return pairs


def split(pairs: list[dict], out: Path, seed: int) -> tuple[Path, Path]:
    train, held = out / "pairs-train.jsonl", out / "pairs-heldout.jsonl"
    if not train.exists():
        order = list(pairs)
        random.Random(seed).shuffle(order)
        n = max(1, len(order) // 10)
        write_jsonl(held, order[:n])
        write_jsonl(train, order[n:])
    return train, held


def refuse_then_comply(src: Path, dst: Path) -> Path:
    """`src`'s pairs plus, per harmful pair, one whose rejected answer refuses and then complies.

    The first DPO arms learnt to open with a refusal and go on with the harmful content: the written
    refusals are chosen on the harmful side and rejected on the helpful side, and no rejected answer
    ever began with one. Here the chosen answer is the same refusal, so the only difference the pair
    carries is what follows it: stop, or go on to comply."""
    if not dst.exists():
        pairs = read_jsonl(src)
        extra = []
        for i, p in enumerate(q for q in pairs if q["id"].startswith("harmful-")):
            refusal, answer = p["chosen"][0]["content"].strip(), p["rejected"][0]["content"].strip()
            text = f"{refusal} {BRIDGES[i % len(BRIDGES)]}\n\n{answer}"
            extra.append({**p, "id": "rtc-" + p["id"], "rejected": [{"role": "assistant", "content": text}],
                          "provenance": {**p["provenance"], "from": "rl-frontier-refuse-then-comply",
                                         "rejected": "written-refusal+bridge+sl-answer"}})
        write_jsonl(dst, pairs + extra)
    return dst


def pm_checks(out: Path, pm: Path, held: Path, log: Path) -> dict:
    """The PM's held-out pair accuracy per side and its AUROC as a refusal grader on XSTest."""
    scores = out / "pm-heldout-scores.jsonl"
    cai("reward", "score", "-m", str(pm), "--data", str(held), "-o", str(scores), log=log)
    sides: dict[str, list[int]] = {}
    for r in read_jsonl(scores):
        sides.setdefault(r["id"].split("-", 1)[0], []).append(int(r["chosen"] > r["rejected"]))
    result = {"heldout_accuracy": {s: {"n": len(v), "accuracy": sum(v) / len(v)} for s, v in sides.items()}}
    if XSTEST_ANSWERS.exists():
        grader_out = out / "pm-xstest-grader.json"
        if not grader_out.exists():
            cai("eval", "grader", "--grader", f"pm:{pm}", "--data", str(XSTEST_ANSWERS), "-o", str(grader_out), log=log)
        result["xstest_grader"] = json.loads(grader_out.read_text()).get("metrics")
    run = pm / "cai_run.json"
    if run.exists():
        meta = json.loads(run.read_text())
        result["pm_run"] = {k: meta.get(k) for k in ("final_metrics", "evaluation")}
    (out / "pm-checks.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="runs/dose", help="the dose study's folder (examples/dose_response.py --out)")
    ap.add_argument("--sl", default="sft-50", help="the SL-CAI model of the study that RL starts from")
    ap.add_argument("--model", default="smollm2-135m", help="the base model (the PM starts from it)")
    ap.add_argument("--out", help="folder of this study (default: STUDY/rl)")
    ap.add_argument("--arms", default="dpo,pm", help="comma-separated: dpo, pm, ppo (ppo needs pm)")
    ap.add_argument("--harmful-pairs", type=int, default=200, help="harmful prompts to pair")
    ap.add_argument("--helpful-pairs", type=int, default=200, help="benign and borderline prompts to pair")
    ap.add_argument("--helpful-ratio", type=float, default=None,
                    help="at most this many helpful pairs per kept harmful pair (default: no cap)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dpo-lr", type=float, default=2e-5)
    ap.add_argument("--dpo-beta", type=float, default=0.1)
    ap.add_argument("--dpo-epochs", type=float, default=2.0)
    ap.add_argument("--refuse-then-comply", action="store_true",
                    help="DPO also on pairs whose rejected answer refuses and then complies (arm dpo-SL-rtc)")
    ap.add_argument("--pm-epochs", type=float, default=2.0)
    ap.add_argument("--ppo-steps", type=int, default=20)
    ap.add_argument("--ppo-kl-coef", type=float, default=0.05, help="PPO's starting beta (cai ppo --kl-coef)")
    ap.add_argument("--ppo-kl-horizon", type=float, default=None,
                    help="cai ppo --kl-horizon, in rollouts; about --ppo-steps x 8 / 10 lets the 2-nat target act "
                         "(the default horizon, 10,000, left beta where it started: docs/results.md)")
    ap.add_argument("--eval-max-tokens", type=int, default=48)
    ap.add_argument("--evals", default="harmlessness,over-refusal,hhh,ifeval")
    args = ap.parse_args()
    args.quick = False

    study = Path(args.study) if Path(args.study).is_absolute() else ROOT / args.study
    needed = [study / args.sl / "config.json", study / "data" / f"mix-{args.sl.split('-', 1)[-1]}.jsonl",
              study / "data" / "harmful-kept.jsonl", study / "data" / "helpful-kept.jsonl"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        sys.exit(f"rl_frontier: {missing[0]} not found; run examples/dose_response.py --out {args.study} with "
                 f"--doses {args.sl.split('-', 1)[-1]} first (or pass --study/--sl of a finished study)")
    out = Path(args.out) if args.out else study / "rl"
    out.mkdir(parents=True, exist_ok=True)
    log = out / "rl.log"
    from cai.evals.graders.refusal_strings import RefusalStrings

    print("1-2. pairs and their signal check", flush=True)
    pairs_file = out / "pairs.jsonl"
    if not pairs_file.exists():
        write_jsonl(pairs_file, make_pairs(study, out, args.sl, args, RefusalStrings("extended"), log))
    train, held = split(read_jsonl(pairs_file), out, args.seed)
    arms = [a for a in args.arms.split(",") if a]
    evals = [e for e in args.evals.split(",") if e]
    models = [("base", args.model), (args.sl, str(study / args.sl))]
    sl = str(study / args.sl)
    if "dpo" in arms:
        print("3. DPO from the SL model", flush=True)
        dpo = out / f"dpo-{args.sl}{'-rtc' if args.refuse_then_comply else ''}"
        data = refuse_then_comply(train, out / "pairs-train-rtc.jsonl") if args.refuse_then_comply else train
        cai("dpo", "-m", sl, "--data", str(data), "-o", str(dpo), "--epochs", str(args.dpo_epochs),
            "--lr", str(args.dpo_lr), "--beta", str(args.dpo_beta), "--batch-size", "8", "--max-length", "256",
            log=log)
    if "pm" in arms or "ppo" in arms:
        print("3. PM from the base model", flush=True)
        pm = out / "pm"
        cai("reward", "-m", args.model, "--data", str(train), "-o", str(pm), "--epochs", str(args.pm_epochs),
            "--lr", "2e-5", "--batch-size", "8", "--max-length", "256", "--eval-split", "0.1",
            "--human-eval", "hh-rlhf", "hhh", "--human-limit", "200", log=log)
        print(json.dumps(pm_checks(out, pm, held, log), indent=1)[:2000], flush=True)
    if "ppo" in arms:
        print("3. PPO from the SL model against the PM", flush=True)
        mix = [{"id": p["id"], "prompt": p["prompt"][0]["content"]} for p in read_jsonl(train)]
        random.Random(args.seed).shuffle(mix)
        write_jsonl(out / "ppo-prompts.jsonl", mix)
        ppo = out / f"ppo-{args.sl}"
        cai("ppo", "-m", sl, "--reward", str(out / "pm"), "--data", str(out / "ppo-prompts.jsonl"), "--field",
            "prompt", "-o", str(ppo), "--max-steps", str(args.ppo_steps), "--batch-size", "8", "--minibatch-size",
            "4", "--max-tokens", "48", "--lora", "--lr", "1e-4", "--kl-target", "2.0", "--kl-coef", str(args.ppo_kl_coef),
            *(["--kl-horizon", str(args.ppo_kl_horizon)] if args.ppo_kl_horizon is not None else []), log=log)
    # Every trained arm in OUT, this call's and earlier calls' (e.g. --arms dpo, then --arms pm,ppo).
    models += [(p.name, str(p)) for p in sorted(out.iterdir())
               if p.name.startswith(("dpo-", "ppo-")) and (p / "config.json").is_file()]
    for name, spec in models:
        run_evals(study, name, spec, evals, args, log)
    write_table(study, out, models)


def write_table(study: Path, out: Path, models: list[tuple[str, str]]) -> None:
    lines = ["| model | " + " | ".join(c[2] for c in COLS) + " |", "|---|" + "---|" * len(COLS)]
    for name, _ in models:
        ms = [metric(study / "evals" / name / f"{t}.json", k) for t, k, _ in COLS]
        lines.append(f"| {name} | " + " | ".join(fmt(m) for m in ms) + " |")
    (out / "rl.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    names = sorted(p.name for p in (study / "evals").iterdir() if p.is_dir())
    plot_frontier(study, names, out / "rl.png", "SL-CAI (circles) and RL from the SL model (squares), 95% intervals",
                  marked=("dpo-", "ppo-"))

if __name__ == "__main__":
    main()

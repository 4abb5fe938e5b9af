"""Plain chat generation: one prompt, or a prompt file to a resumable JSONL of answers.

``generate_file`` reads prompts with ``cai.sources.load_prompts``, answers them ``batch_size`` at a
time, and appends each finished batch to the output with ``cai.store.RecordStore`` (written and
fsynced at once), so a killed run loses at most the batch in flight and the same call resumes it.

Batches are cut at fixed positions of the prompt list and batch ``k`` samples with seed
``seed + k``, so a resumed run produces what an uninterrupted run would have (on backends that
are reproducible per call, such as hf and mock), whatever was done before it stopped.

With ``filter`` each batch passes through :func:`cai.generation_filter.filter_answers` before it
is written: answers that refuse, loop or are empty go to ``OUT.dropped.jsonl`` with their reason
(a resumed run skips them too), and answers cut at the token limit end at their last whole sentence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cai.config import option, to_dict
from cai.errors import CAIError
from cai.outputs import inputs_of, overwrite_option
from cai.overlong import check_overlong, load_for_overlong, prompt_tokens
from cai.sources import list_builtin_prompt_sets
from cai.types import Completion, Conversation, SamplingParams, keyed_seed

# Provenance keys that must match for a run to continue an existing output file.
_RESUME_KEYS = ("models", "sampling", "seed", "system", "filter")


@dataclass
class GenerateConfig:
    model: str = option("smollm2-135m", help="model: alias, folder or backend spec (hf:PATH, vllm:PATH, "
                        "openai:URL#MODEL, mock:)", flags=("-m", "--model"))
    input: str | None = option(None, help="prompt source for a batch run: file (.jsonl/.json/.csv/.txt/.parquet), "
                               f"built-in set ({', '.join(list_builtin_prompt_sets())}), built-in sets joined "
                               "by + (borderline+benign), hh-rlhf:PATH or hf:DATASET[:SPLIT]",
                               flags=("--data",), aliases=("-i", "--input", "--prompts"))
    output: str | None = option(None, help="JSONL file for the answers of a batch run; running again resumes it",
                                flags=("-o", "--output"))
    field: str | None = option(None, help="column holding the prompt text in a JSONL/CSV/Parquet input")
    limit: int | None = option(None, help="answer at most N prompts")
    system: str | None = option(None, help="system message for every prompt (replaces the prompt's own)",
                                flags=("--system-prompt",), aliases=("--system",))
    max_tokens: int = option(256, help="token limit of each answer")
    temperature: float = option(0.2, help="sampling temperature (0 = greedy; 0.2 is what SmolLM2 is tuned for)")
    top_p: float = option(1.0, help="nucleus sampling top-p")
    n: int = option(1, help="answers per prompt (records get ids PROMPT_ID-sJ when k > 1)",
                    flags=("-k", "--samples-per-prompt"), aliases=("--n",))
    stop: tuple[str, ...] = option((), help="stop strings: an answer ends before the first one")
    seed: int = option(0, help="sampling seed (batch k of a file run uses seed + k)")
    # vLLM runs up to 256 sequences at once: on the 2-core dev VM one call of 256 prompts generated
    # 678 tokens/s against 535 for calls of 32; a kill loses one call's answers.
    batch_size: int = option(256, help="prompts per backend call; also the unit of saving")
    overlong: str = option("error", help="a prompt longer than the model's context: error (stop and name it), "
                           "truncate (keep its last tokens, with a warning; hf backend) or skip (list it in "
                           "OUT.skipped.jsonl and go on)")
    filter: bool = option(False, help="keep only answers fit to train on: those that refuse, loop or are (nearly) "
                          "empty go to OUT.dropped.jsonl with the reason, and an answer cut at --max-tokens ends at "
                          "its last whole sentence (trimmed: true in its record)")
    filter_grader: str = option("refusal-strings:extended", help="with --filter, what decides that an answer "
                                "refuses: refusal-strings[:SET], judge:MODEL or pm:DIR")
    overwrite: bool = overwrite_option()

    def __post_init__(self) -> None:
        if self.filter:
            from cai.evals.graders import check_grader_spec

            check_grader_spec(self.filter_grader)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}; leave it out to answer every prompt")
        check_overlong(self.overlong)
        self.sampling()  # validates temperature, top_p, max_tokens and n now, not after the model loads

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                              stop=tuple(self.stop), n=self.n, seed=self.seed)


def with_system(messages: Conversation, system: str | None) -> Conversation:
    """``messages`` with ``system`` as their only system message (unchanged when ``system`` is None)."""
    if system is None:
        return list(messages)
    rest = [m for m in messages if m["role"] != "system"]
    return ([{"role": "system", "content": system}] if system else []) + rest


def generate_one(config: GenerateConfig, prompt: str, backend: Any = None) -> list[Completion]:
    """Answer one user prompt; ``config.n`` completions."""
    from cai.backends import load_backend, split_spec

    if not prompt.strip():
        raise CAIError('empty prompt; pass the question as an argument, e.g. cai generate "Name three colors."')
    # One answer does not repay vLLM's compile warm-up.
    quick = {"quick_start": True} if backend is None and split_spec(config.model)[0] == "vllm" else {}
    backend = load_backend(backend if backend is not None else config.model, **quick)
    conv = with_system([{"role": "user", "content": prompt}], config.system)
    return backend.generate([conv], config.sampling())


def generate_file(config: GenerateConfig, backend: Any = None, *, show_progress: bool | None = None) -> dict[str, Any]:
    """Answer every prompt of ``config.input`` into ``config.output``; returns a summary dict.

    ``backend`` (a loaded backend or a spec) overrides ``config.model``.
    """
    from cai.progress import progress
    from cai.same_prompts import check_same_prompts
    from cai.sources import load_prompts
    from cai.store import RecordStore, sidecar

    if not config.input:
        raise CAIError("no input given; pass --data PROMPTS.jsonl (or a built-in set such as helpful)")
    if not config.output:
        raise CAIError("no output given; pass --output OUT.jsonl (running the same command again resumes it)")
    # A bad output path fails before any work.
    mine = dict(stage="generate", overwrite=config.overwrite, inputs=inputs_of(config))
    store = RecordStore(config.output, **mine)
    skipped = RecordStore(sidecar(config.output, "skipped"), **mine)
    dropped = RecordStore(sidecar(config.output, "dropped"), **mine)
    prompts = load_prompts(config.input, field=config.field, limit=config.limit)
    if not prompts:
        raise CAIError(f"{config.input} holds no prompts")
    check_same_prompts((store, dropped), {p.id: with_system(p.messages, config.system) for p in prompts},
                       source=config.input, prompt_of=lambda rec: (rec.get("messages") or [])[:-1] or None,
                       id_of=lambda rec: rec.get("prompt_id", rec["id"]))
    ids_of = (lambda p: [p.id]) if config.n == 1 else (lambda p: [f"{p.id}-s{j}" for j in range(config.n)])
    done = lambda rid: rid in store or rid in skipped or rid in dropped  # noqa: E731
    todo_count = sum(1 for p in prompts for i in ids_of(p) if not done(i))
    summary = {"output": str(Path(config.output)), "prompts": len(prompts), "written": 0,
               "skipped": len(prompts) * config.n - todo_count, "dropped": 0}
    # Checked before any model starts, against a stand-in of the stored name (-k or --data changed
    # made a vLLM start only to be refused); a finished output needs nothing else.
    _check_resume(store, _provenance(_finished_model(backend if backend is not None else config.model, store,
                                                     dropped), config), dropped)
    if todo_count == 0:
        return {**summary, "total": len(store), "dropped_total": len(dropped)}
    backend = load_for_overlong(backend if backend is not None else config.model, config.overlong)
    _check_resume(store, _provenance(backend, config), dropped)
    grader = None
    if config.filter:
        from cai.evals.graders import load_grader

        grader = load_grader(config.filter_grader)

    with progress(len(prompts) * config.n, "generate", unit="answer", initial=summary["skipped"],
                  enabled=show_progress) as bar:
        for start in range(0, len(prompts), config.batch_size):
            batch = [p for p in prompts[start:start + config.batch_size] if any(not done(i) for i in ids_of(p))]
            convs = [with_system(p.messages, config.system) for p in batch]
            batch, convs = _overlong(config, backend, batch, convs, skipped, ids_of, bar)
            if not batch:
                continue
            # One seed per prompt, from its id: a resumed run's redone prompts draw what the first
            # run would have, whatever batch they come in.
            params = replace(config.sampling(), seeds=tuple(keyed_seed(config.seed, "generate", p.id) for p in batch))
            completions = backend.generate(convs, params)
            prov = _provenance(backend, config)
            records = []
            for j, (p, conv) in enumerate(zip(batch, convs)):
                for s, c in enumerate(completions[j * config.n:(j + 1) * config.n]):
                    records.append(_record(ids_of(p)[s], p, conv, c, prov, s if config.n > 1 else None))
            if grader is not None:
                from cai.generation_filter import filter_answers

                records = filter_answers(records, grader)
                # The dataset first: a crash between the two writes can lose only dropped answers.
                summary["written"] += store.append([r for r in records if "dropped" not in r])
                summary["dropped"] += dropped.append([r for r in records if "dropped" in r])
            else:
                summary["written"] += store.append(records)
            bar.update(len(records))
    if grader is not None and not len(store) and len(dropped):
        from cai.generation_filter import kept_no_answer

        raise CAIError(kept_no_answer(dropped))
    return {**summary, "total": len(store), "dropped_total": len(dropped)}


def _overlong(config: GenerateConfig, backend: Any, batch: list, convs: list, skipped: Any, ids_of: Any,
              bar: Any) -> tuple[list, list]:
    """Apply ``--overlong`` to one batch: the prompts to answer, and those skipped (written)."""
    import sys

    if config.overlong == "error" or not batch:
        return batch, convs
    sizes = [prompt_tokens(backend, c) for c in convs]
    if config.overlong == "skip" and any(s is None for s in sizes):
        raise CAIError(f"--overlong skip needs a backend that tokenizes locally (hf, vllm), not {backend.name}")
    long = [i for i, s in enumerate(sizes) if s is not None and s[0] + 1 > s[1]]
    if not long:
        return batch, convs
    if config.overlong == "truncate":
        print(f"cai: warning: {len(long)} prompt(s) longer than the context ({sizes[long[0]][1]} tokens) keep only "
              f"their last tokens: {', '.join(batch[i].id for i in long[:5])}", file=sys.stderr)
        return batch, convs
    recs = [{"id": rid, "prompt_id": batch[i].id, "reason": "overlong", "prompt_tokens": sizes[i][0],
             "context": sizes[i][1], "provenance": {"stage": "generate", "models": {"policy": backend.name}}}
            for i in long for rid in ids_of(batch[i])]
    skipped.append(recs)
    bar.update(len(recs))
    print(f"cai: warning: skipped {len(long)} prompt(s) longer than the context ({sizes[long[0]][1]} tokens); "
          f"listed in {skipped.path}", file=sys.stderr)
    keep = [i for i in range(len(batch)) if i not in set(long)]
    return [batch[i] for i in keep], [convs[i] for i in keep]


def _record(rid: str, prompt: Any, conv: Conversation, c: Completion, prov: dict[str, Any],
            sample: int | None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": rid,
        "messages": list(conv) + [{"role": "assistant", "content": c.text}],
        "completion": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                       "finish_reason": c.finish_reason},
        "source": prompt.source,
    }
    if sample is not None:
        rec["prompt_id"], rec["sample"] = prompt.id, sample
    if prompt.meta:
        rec["meta"] = prompt.meta
    rec["provenance"] = prov
    return rec


def _provenance(backend: Any, config: GenerateConfig) -> dict[str, Any]:
    from cai.provenance import provenance

    sampling = config.sampling().to_dict()
    sampling.pop("seed")
    return provenance(models={"policy": backend.name}, sampling=sampling, seed=config.seed, seeds="per prompt",
                      system=config.system, stage="generate", input=config.input,
                      filter=config.filter_grader if config.filter else None, config=to_dict(config))


def _finished_model(spec: Any, store: Any, dropped: Any) -> Any:
    """What a finished output is checked against, unloaded (:mod:`cai.backends.unstarted`): the
    backend given, a stand-in of the stored name when ``spec`` could load it, else one named as
    ``spec`` would load first (so another model is refused); a model only a load can name (an
    openai server asked for it) is taken to be the stored one, as it was before any check."""
    from cai.backends.unstarted import Unstarted, named, stand_in

    first = next(iter(store), None) or next(iter(dropped), None)
    stored = (((first or {}).get("provenance") or {}).get("models") or {}).get("policy")
    found = stand_in(spec, stored) or named(spec)
    return Unstarted(found, stored) if isinstance(found, str) else found


def _check_resume(store: Any, prov: dict[str, Any], dropped: Any) -> None:
    """Refuse to mix answers made with other settings into one file (filtered and unfiltered ones
    included: a file written before ``filter`` was recorded was not filtered)."""
    from cai.sources import same_source

    first = next(iter(store), None) or next(iter(dropped), None)
    old = (first or {}).get("provenance") or {}
    if first is not None:
        old = {"filter": None, **old}
    diff = [k for k in _RESUME_KEYS if k in old and old[k] != prov[k]]
    # Another prompt file (a renamed one included: ids made from the text carry the file's name)
    # would add its answers beside these, the same prompts twice.
    if "input" in old and not same_source(old["input"], prov["input"]):
        diff.append("input")
    if diff:
        raise CAIError(f"{store.path} was written with other settings ({', '.join(diff)} differ: "
                       f"{ {k: old[k] for k in diff} }); rerun with those settings to resume, or pass a new --output")

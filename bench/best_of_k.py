"""Best of K at the price of one prompt: wall time and tokens/s of K = 1, 4 and 8 samples per prompt.

The same P prompts (default: the first 32 of the built-in ``redteam`` set) are answered K times
each, at temperature 0.7 with a fixed limit of 64 new tokens, through the backend as ``cai
generate -k K`` drives it: one ``generate`` call for all prompts with ``SamplingParams(n=K)``
(built by :class:`cai.generation.GenerateConfig`). The K samples of a prompt share its prefill:
the vllm backend sends each prompt once with vLLM's ``n`` (its K child requests read the prompt's
full KV blocks from the prefix cache: blocks of 32 tokens on a CPU, where vLLM's own 128 left a
57-token prompt none to share; on a CPU they also copy the prompt's last, partial block from the
first child, :mod:`cai.backends.vllm_siblings`), and the hf backend runs the prompt once and copies
its KV cache K times.

``--data revisions`` times cai's own best of K instead, ``cai critique --samples K``: the revision
requests of the quickstart's critique step (its first 64 ``redteam`` prompts answered and critiqued
once by the critique engine with the quickstart's token limits, about 1,300 prompt tokens each, of
which the constitution's worked examples, about 900, are the same in all), each sent once with n = K
and the engine's own sampling (its stop strings, at most 192 new tokens). It writes its own section.

The target is the issue's: best of 8 costs at most 3x best of 1 in wall time for the same prompts.
For comparison the table also has K = 8 sent as 8 copies of each prompt with n = 1 (what a
caller without ``n`` would do; on vLLM the prefix cache shares those prefills too, on hf it does
not).

The bound: after the timed rows the script measures the machine's matmul peak (a 2048x2048
matmul, as bench/training.py does) in the dtype the engine computes in: bf16, or fp32 on a CPU that
computes in fp32 (:func:`cai.precision.cpu_compute_dtype`; one without bf16 instructions emulates
it), and counts the matmul work each row cannot avoid: the prompts'
prefill with every shared prefix computed once (the tokens of the prompts' prefix tree, however
many samples or prompts begin with them), 2 x the layers' linear weights a token; and per sample
the LM head for each generated token and the layers for each but the last. Their ratio is what
best of 8 costs against best of 1 where both run at the same rate; the section also gives the rate
best of 8 would need for the target, as a share of the peak.

Fairness: vLLM's prefix cache is emptied before every timed run, so no run reads prompts an
earlier run cached; every rate counts the tokens actually generated (the end-of-turn token
included) and the table shows how many answers reached the limit. Model loading and engine
start are excluded; a short warm-up call with n = max K precedes the timed runs. The script runs on
the allocator the ``cai`` command runs on (TCMalloc where installed, :mod:`cai.allocator`; ``--malloc
libc`` for the C library's, as the rows before 2026-12-07 ran), and its section names it.

    python bench/best_of_k.py                   # full run on the vllm backend; writes its section of bench/RESULTS.md
    python bench/best_of_k.py --backend hf      # the same on the hf backend
    python bench/best_of_k.py --data revisions  # cai critique's best of K: the quickstart's revision requests
    python bench/best_of_k.py --quick           # smoke run: 4 prompts x 16 tokens; writes nothing
    python bench/best_of_k.py --data revisions --ks 1,8 --attention cai,vllm
                                                # cai's decode attention against vLLM's in one process
                                                # (CAI_VLLM_ATTENTION, cai.backends.vllm_attention), ABBA
    python bench/best_of_k.py --data revisions --ks 1,8 --attention auto,vllm
                                                # the engine's timed choice against vLLM's kernel
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from cai.allocator import active
from cai.env_flags import CHOICES
from report import finish, header  # bench/report.py, shared by the bench scripts
from training import matmul_peak  # bench/training.py: the matmul peak, measured the same way there

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## Best of K: K samples per prompt for the price of one prefill (bench/best_of_k.py)"
REVISIONS = "revisions"  # --data value: the critique step's revision requests
SECTION_REVISIONS = "## Best of K on the critique step's revision requests (bench/best_of_k.py --data revisions)"
TARGET = 3.0  # wall(K = 8) / wall(K = 1) at most


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="model alias or folder (default: smollm2-135m)")
    p.add_argument("--backend", default="vllm", choices=("vllm", "hf"), help="backend (default: vllm)")
    p.add_argument("--data", default="redteam", help="prompt set or file (default: the built-in redteam set), or "
                   f"{REVISIONS!r}: the quickstart critique step's revision requests for the first P redteam prompts")
    p.add_argument("--prompts", type=int, default=None,
                   help=f"prompts P (default: 32; 64 with --data {REVISIONS}, the quickstart's critique step's)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help=f"new tokens per sample at most (default: 64; 192 with --data {REVISIONS}, the quickstart's)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default: 0.7)")
    p.add_argument("--ks", default="1,4,8", help="comma-separated K values; must hold 1 and 8 for the target (default: 1,4,8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 4 prompts x 16 tokens; writes nothing")
    p.add_argument("--malloc", default="tcmalloc", choices=("tcmalloc", "libc"),
                   help="allocator: tcmalloc, the cai command's (TCMalloc where installed; default), or libc, "
                        "the C library's (the bench's rows before 2026-12-07)")
    p.add_argument("--attention", default=None,
                   help="comma-separated CAI_VLLM_ATTENTION settings to compare in one engine (vllm backend), "
                        "e.g. cai,vllm: each K runs in ABBA order (A B B A) and a row's seconds are the mean of "
                        "its two runs; the first setting decides PASS. auto: the engine times both on its first "
                        "steps of each kind and keeps the faster (its choices are reported). Default: the engine's "
                        "own choice, one run a row, and the K = max copies row")
    p.add_argument("--results", default=str(RESULTS), help="results file (default: bench/RESULTS.md)")
    args = p.parse_args(argv)
    if args.attention is not None:
        args.attention = [m.strip().lower() for m in args.attention.split(",")]
        words = (*CHOICES["CAI_VLLM_ATTENTION"], "default")  # the variable's own words, and unset
        if len(args.attention) < 2 or len(set(args.attention)) < len(args.attention) or not set(
                args.attention) <= set(words):
            p.error(f"--attention takes two or more of {', '.join(words)}, got {','.join(args.attention)!r}")
        if args.backend != "vllm":
            p.error("--attention compares the vllm backend's attention kernels; it needs --backend vllm")
    try:
        args.ks = sorted({int(k) for k in args.ks.split(",") if k.strip()})
    except ValueError:
        p.error(f"--ks takes whole numbers such as 1,4,8, got {args.ks!r}")
    if not args.ks or args.ks[0] < 1:
        p.error("--ks needs K values of at least 1")
    # The quickstart preset's critique section and constitution, read once: --data revisions sends its requests.
    args.quickstart = quickstart_critique() if args.data == REVISIONS else ({}, None)
    critique = args.quickstart[0]
    if args.prompts is None:
        args.prompts = critique.get("limit", 32)
    if args.max_tokens is None:
        args.max_tokens = critique.get("revision_max_tokens", 64)
    if args.quick:
        args.prompts, args.max_tokens = min(args.prompts, 4), min(args.max_tokens, 16)
    return args


def load_conversations(data: str, n: int) -> list[list[dict[str, str]]]:
    from cai.sources import load_prompts

    prompts = load_prompts(data, limit=n)
    if len(prompts) < n:
        raise SystemExit(f"{data} has only {len(prompts)} prompts; ask for --prompts {len(prompts)} or fewer")
    return [p.messages for p in prompts]


class _Recorder:
    """A backend that remembers what each ``generate`` call sent, and passes it on."""

    def __init__(self, backend) -> None:
        self.backend, self.calls = backend, []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate(self, convs, params):
        self.calls.append((list(convs), params))
        return self.backend.generate(convs, params)


def quickstart_critique() -> tuple[dict, str]:
    """The quickstart preset's critique section and constitution (``cai run --preset quickstart``)."""
    from cai.run.presets import load_run_file

    spec, _, _ = load_run_file(None, "quickstart")
    return dict(spec["critique"]), spec["constitution"]


def revision_requests(backend, args) -> tuple[list, object]:
    """The revision requests (and their sampling) that ``cai critique`` sends for the first P
    prompts with the quickstart's critique settings (its prompt set, rounds, constitution and
    token limits; --max-tokens for the revisions); the revision call is recorded, not timed."""
    from cai.critique.engine import CritiqueConfig, critique_revise
    from cai.sources import load_prompts

    fields, constitution = dict(args.quickstart[0]), args.quickstart[1]
    data = fields.pop("prompts")
    fields.update(limit=args.prompts, batch_size=args.prompts, revision_max_tokens=args.max_tokens,
                  temperature=args.temperature, seed=args.seed)
    recorder = _Recorder(backend)
    critique_revise(load_prompts(data, limit=args.prompts), policy=recorder, critic=recorder,
                    constitution=constitution, config=CritiqueConfig(**fields))
    convs, params = recorder.calls[-1]  # the first answers, the critiques, then the revisions
    return convs, params


def sampling(args, k: int):
    """The SamplingParams ``cai generate -k K --temperature T --max-tokens M --seed S`` sends, or with
    --data revisions the critique engine's revision sampling with n = K."""
    from dataclasses import replace

    from cai.generation import GenerateConfig

    if args.data == REVISIONS:
        return replace(args.revision_params, n=k)

    return GenerateConfig(model=args.model, n=k, temperature=args.temperature, max_tokens=args.max_tokens,
                          seed=args.seed).sampling()


def timed(backend, convs, params) -> dict:
    # Empty vLLM's prefix cache first: a run must not read the prompts an earlier run cached.
    llm = getattr(backend, "llm", None)
    if llm is not None and hasattr(llm, "reset_prefix_cache"):
        llm.reset_prefix_cache()
    t0 = time.perf_counter()
    out = backend.generate(convs, params)
    seconds = time.perf_counter() - t0
    return {"samples": len(out), "seconds": seconds, "tokens": sum(c.completion_tokens for c in out),
            "at_limit": sum(c.finish_reason == "length" for c in out),
            "prompt_tokens": sum(c.prompt_tokens for c in out[:: params.n])}


def linear_weights(path: str) -> tuple[int, int]:
    """(the decoder layers' linear weights, the LM head's) of a Llama-shaped model folder: what a
    token's matmuls multiply, 2 FLOPs a weight."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(path)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q = c.num_attention_heads * head_dim
    kv = c.num_key_value_heads * head_dim
    layer = c.hidden_size * (q + 2 * kv) + q * c.hidden_size + 3 * c.hidden_size * c.intermediate_size
    return c.num_hidden_layers * layer, c.vocab_size * c.hidden_size


def prefix_tree_tokens(sequences: list[list[int]]) -> int:
    """Tokens in the prefix tree of these sequences: each prefix that several begin with counted once,
    the least prefill any engine must compute for them."""
    ordered = sorted(map(tuple, sequences))
    total, before = 0, ()
    for seq in ordered:
        shared = 0
        for a, b in zip(seq, before):
            if a != b:
                break
            shared += 1
        total += len(seq) - shared
        before = seq
    return total


def matmul_flops(row: dict, weights: tuple[int, int], prefill: int) -> float:
    """The matmul FLOPs a row cannot avoid: ``prefill`` prompt tokens through the layers; each sample's
    generated tokens through the LM head, and all but its last back through the layers."""
    layers, head = weights
    return 2.0 * layers * (prefill + row["tokens"] - row["samples"]) + 2.0 * head * row["tokens"]


def bound_lines(rows: dict, weights: tuple[int, int], prefill: tuple[int, int], peak: float,
                dtype: str = "bf16") -> list[str]:
    """What the matmul work alone says about best of 8 against best of 1, at the ``dtype`` peak this run
    measured; ``prefill`` is (the prompts' prefix-tree tokens, all their tokens)."""
    one, eight = rows[1], rows[8]
    f1, f8 = matmul_flops(one, weights, prefill[0]), matmul_flops(eight, weights, prefill[0])
    rate1, rate8 = f1 / one["seconds"], f8 / eight["seconds"]
    need = f8 / (TARGET * one["seconds"])
    return [
        f"- the bound: the matmul work no engine can skip (the prompts' prefill with each shared prefix computed "
        f"once: {prefill[0]:,} of their {prefill[1]:,} tokens; {weights[0] / 1e6:.1f}M layer weights a token, "
        f"{sum(weights) / 1e6:.1f}M with the LM head a generated one; 2 FLOPs a weight): best of 1 "
        f"{f1 / 1e12:.2f} TFLOP, best of 8 {f8 / 1e12:.2f} TFLOP, **{f8 / f1:.2f}x**: what best of 8 costs "
        "against best of 1 where both run at the same rate",
        f"- {dtype} matmul peak measured in this run: {peak / 1e9:.0f} GFLOP/s. Best of 1 ran at {rate1 / 1e9:.0f} "
        f"GFLOP/s overall ({rate1 / peak:.0%} of it), best of 8 at {rate8 / 1e9:.0f} ({rate8 / peak:.0%})",
        f"- for {TARGET:.0f}x best of 8 would have to run at {need / 1e9:.0f} GFLOP/s overall, **{need / peak:.0%} of "
        "the peak** with its attention, sampling and scheduling included; its matmuls alone at the peak, with "
        f"nothing else, would take {f8 / peak / one['seconds']:.2f}x best of 1",
    ]


def run(args, convs) -> tuple[dict, float, str]:
    """The timed rows (K -> measures, and "copies" for K = max as max copies of each prompt). With
    --data revisions ``convs`` is None: the requests are recorded here, once the model is loaded."""
    from dataclasses import replace

    from cai.backends import load_backend
    from cai.chat import encode_prompt

    t0 = time.perf_counter()
    backend = load_backend(f"{args.backend}:{args.model}")
    load_s = time.perf_counter() - t0
    args.weights = linear_weights(backend.path)
    from cai.precision import cpu_compute_dtype

    # Both backends compute in this dtype on a CPU when it is "auto", as the bench leaves it.
    args.peak_dtype = "bf16" if cpu_compute_dtype() == "bfloat16" else "fp32"
    rows: dict = {}
    try:
        if convs is None:
            print(f"recording the critique step's revision requests for {args.prompts} prompts ...", file=sys.stderr)
            convs, args.revision_params = revision_requests(backend, args)
        ids = [encode_prompt(backend.tokenizer, c) for c in convs]  # what the backend sends
        args.prefill = (prefix_tree_tokens(ids), sum(map(len, ids)))
        top = max(args.ks)
        # The revision requests carry the critique engine's seed per prompt: not for a subset or copies.
        backend.generate(convs[:2], replace(sampling(args, top), max_tokens=4, seeds=None))  # warm-up
        if args.attention:
            rows = compare_attention(args, backend, convs)
        else:
            for k in args.ks:
                print(f"K = {k}: {len(convs)} prompts x {k} samples ...", file=sys.stderr)
                rows[k] = timed(backend, convs, sampling(args, k))
        if top > 1 and not args.attention:
            print(f"K = {top} as {top} copies of each prompt ...", file=sys.stderr)
            copies = [c for c in convs for _ in range(top)]
            rows["copies"] = timed(backend, copies, replace(sampling(args, 1), seeds=None))
            rows["copies"]["prompt_tokens"] //= top  # the same P prompts, each sent `top` times
    finally:
        close = getattr(backend, "close", None)
        if close:
            close()
    # Measured after the engine is gone, with the threads it left, so nothing else runs beside it.
    args.peak = matmul_peak(dtypes=(args.peak_dtype,))[args.peak_dtype]
    return rows, load_s, backend.name


def compare_attention(args, backend, convs) -> dict:
    """Each --attention setting's rows ({setting: {K: measures}}), all from one engine: for each K the
    settings run in ABBA order (A B B A for two), so a drift of the machine over the minutes falls on
    both alike; a row's seconds are the mean of its two runs, and both runs are kept."""
    import logging

    rows: dict = {m: {} for m in args.attention}
    before = os.environ.get("CAI_VLLM_ATTENTION")
    # What `auto` decided, from the pick's own log line (cai.backends.vllm_attention_pick).
    picks = logging.getLogger("cai.backends.vllm_attention_pick")
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: args.picks.append(record.getMessage().removeprefix("cai: "))
    args.picks, level = [], picks.level
    picks.addHandler(handler)
    picks.setLevel(logging.DEBUG)
    try:
        for k in args.ks:
            for mode in args.attention + args.attention[::-1]:
                # Read by cai's attention at every step (cai.backends.vllm_attention); "default" unsets it.
                if mode == "default":
                    os.environ.pop("CAI_VLLM_ATTENTION", None)
                else:
                    os.environ["CAI_VLLM_ATTENTION"] = mode
                print(f"K = {k}, attention {mode}: {len(convs)} prompts x {k} samples ...", file=sys.stderr)
                r = timed(backend, convs, sampling(args, k))
                if k in rows[mode]:
                    first = rows[mode][k]
                    r["runs"] = (first["seconds"], r["seconds"])
                    r["seconds"] = (first["seconds"] + r["seconds"]) / 2
                rows[mode][k] = r
    finally:
        picks.removeHandler(handler)
        picks.setLevel(level)
        if before is None:
            os.environ.pop("CAI_VLLM_ATTENTION", None)
        else:
            os.environ["CAI_VLLM_ATTENTION"] = before
    return rows


def report(args, rows: dict, load_s: float, name: str, load_at_start: float) -> tuple[str, bool]:
    p = args.prompts
    first = rows[args.attention[0]] if args.attention else rows
    prompt_tokens = first[min(args.ks)]['prompt_tokens'] / p
    if args.data == REVISIONS:
        critique, constitution = args.quickstart
        rounds = "one round" if critique.get("rounds", 1) == 1 else f"{critique['rounds']} rounds"
        job = (f"- job: `{name}`, the revision requests `cai critique` sends for the first {p} `{critique['prompts']}` "
               f"prompts with the quickstart's settings ({rounds}, the `{constitution}` "
               f"constitution; {prompt_tokens:.0f} prompt "
               f"tokens each on average), its sampling (temperature {args.temperature}, its stop strings, at most "
               f"{args.max_tokens} new tokens), with n = K as `cai critique --samples K` sends them. Rates count "
               "the tokens actually generated (end-of-turn included).")
    else:
        job = (f"- job: `{name}`, the first {p} prompts of `{args.data}` ({prompt_tokens:.0f} "
               f"prompt tokens each on average), temperature {args.temperature}, at most {args.max_tokens} new tokens "
               f"per sample, seed {args.seed}; one `generate` call per row with `SamplingParams(n=K)`, as `cai "
               "generate -k K` sends it. Rates count the tokens actually generated (end-of-turn included).")
    lines = [
        heading(args), "",
        *header(load_at_start, machine_note=f"; allocator: {active()}"),
        job,
        f"- engine start and model loading excluded ({load_s:.1f} s)"
        + ("; vLLM's prefix cache is emptied before each row." if name.startswith("vllm:") else "."),
    ]
    if not args.attention:
        table, ok = table_lines(args, rows)
        return "\n".join(lines + table), ok
    lines.append(f"- decode attention: the settings of `CAI_VLLM_ATTENTION` below, in one engine, each K in the "
                 f"order {', '.join(args.attention + args.attention[::-1])}; a row's seconds are the mean of its "
                 "two runs (both in brackets). PASS is the first setting's.")
    for choice in getattr(args, "picks", []):
        lines.append(f"- the engine's timed choice: {choice}")
    verdicts = []
    for mode in args.attention:
        table, ok = table_lines(args, rows[mode])
        verdicts.append(ok)
        lines += ["", f"### `CAI_VLLM_ATTENTION={'' if mode == 'default' else mode}`"
                  + (" (the engine's default)" if mode == "default" else "")] + table
    return "\n".join(lines), verdicts[0]


def heading(args) -> str:
    """The section's heading: comparisons of the attention kernels get one of their own."""
    base = SECTION_REVISIONS if args.data == REVISIONS else SECTION
    return base if not args.attention else f"{base[:-1]} --attention {','.join(args.attention)})"


def table_lines(args, rows: dict) -> tuple[list[str], bool]:
    """One set of rows as a table, the target's verdict and the bound."""
    lines = ["", "| K | samples | seconds | tokens | answers at the limit | tokens/s | wall vs K = 1 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    base = rows[min(args.ks)]["seconds"]
    for key, r in rows.items():
        label = f"{max(args.ks)} as {max(args.ks)} copies of each prompt, n = 1" if key == "copies" else str(key)
        runs = f" ({r['runs'][0]:.2f}, {r['runs'][1]:.2f})" if "runs" in r else ""
        lines.append(f"| {label} | {r['samples']} | {r['seconds']:.2f}{runs} | {r['tokens']} | {r['at_limit']} | "
                     f"{r['tokens'] / r['seconds']:.1f} | {r['seconds'] / base:.2f}x |")
    lines.append("")
    ok = True
    if 1 in rows and 8 in rows:
        ratio = rows[8]["seconds"] / rows[1]["seconds"]
        ok = ratio <= TARGET
        lines.append(f"- best of 8 costs at most {TARGET:.0f}x best of 1 in wall time: {ratio:.2f}x, "
                     f"**{'PASS' if ok else 'FAIL'}**")
        lines.extend(bound_lines(rows, args.weights, args.prefill, args.peak, args.peak_dtype))
    else:
        lines.append("- the target needs K = 1 and K = 8 (--ks); not checked")
    lines.append("")
    return lines, ok


def use_allocator(choice: str) -> None:
    """Start this script again on the allocator asked for, as the ``cai`` command starts itself on
    TCMalloc (:mod:`cai.allocator`), or do nothing where it already runs on it."""
    from cai.allocator import ALLOCATORS, preload_env, without_preload

    if choice == "tcmalloc":
        env = preload_env(os.environ)
    elif any(a in os.environ.get("LD_PRELOAD", "") for a in ALLOCATORS):
        env = without_preload(os.environ)
    else:
        env = None
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    if argv is None:
        use_allocator(args.malloc)
    convs = None if args.data == REVISIONS else load_conversations(args.data, args.prompts)
    load_at_start = os.getloadavg()[0]
    rows, load_s, name = run(args, convs)
    section, ok = report(args, rows, load_s, name, load_at_start)
    return finish(section, ok, quick=args.quick, results=args.results, heading=heading(args))


if __name__ == "__main__":
    raise SystemExit(main())

"""vLLM engine start on a CPU: seconds to start, generation rate and peak memory against the KV cache size.

Every vLLM step of ``cai run`` starts its own engine, and on a 2-core CPU the start is a third of a
short step. Two of its parts are cai's to choose: the KV cache (vLLM touches every page of it while
starting) and the torch.compile warm-up (``quick_start`` skips it and generates eagerly). Each row
starts a fresh process, as a ``cai run`` step does, builds ``VLLMBackend`` and times:

* start: ``VLLMBackend(...)``, from the import of vLLM to a ready engine (compile caches warm: a
  first row warms them and is not shown);
* the job: one ``generate`` call of P prompts (default: the first 64 of the built-in ``everyday``
  set) at temperature 0.7, at most M new tokens each (default 128), seed 0; tokens/s counts the
  tokens generated;
* peak RSS of the process.

Rows: ``default`` is what cai asks for now (:func:`cai.backends.vllm_memory.job_tokens` tokens of
cache, vLLM's AOT compile cache on for this folder: :mod:`cai.backends.vllm_compile`); ``kvN`` asks
for N thousand tokens (1024s) with the compile warm-up; ``quick`` is ``quick_start=True`` (no
warm-up, 16k tokens). The compile-cache rows: ``no-aot`` is default with the AOT cache off
(``VLLM_USE_AOT_COMPILE=0``); ``new-folder`` starts a copy of the model in a new folder with a
``cai_run.json`` that names no base model (cai keeps the AOT cache off there); ``trained-folder``
the same copy with the run record and ``config.json`` a cai trainer writes for an SFT model of this
model (``base_model`` set, ``use_cache`` false), which cai starts under the base model's AOT key;
``new-folder-aot`` the same with the AOT cache forced on (in a vLLM cache root of its own, left
empty, so that no earlier row's artifact helps it). ``vllm-sampler`` is default with vLLM's own
Gumbel sampler (``CAI_VLLM_SAMPLER=vllm``) instead of cai's inverse-CDF one
(:mod:`cai.backends.vllm_sampler`): its job's tokens/s is the before of that change, and its texts
differ (another random stream). ``vllm-warmup`` is default with vLLM's whole warm-up at the start
(``CAI_VLLM_WARMUP=vllm``: its dummy sampler passes too, which cai skips on a CPU,
:mod:`cai.backends.vllm_warmup`): its start is the before of that change. The texts of every other row must be the same as default's; the
table says where they are not (``quick``: eager kernels round differently).

    python bench/engine_start.py                       # default,kv16,kv256,no-aot,new-folder,trained-folder,new-folder-aot,vllm-sampler,quick; writes its section
    python bench/engine_start.py --rows kv32,kv128
    python bench/engine_start.py --quick               # 8 prompts x 16 tokens, rows default,quick; writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from report import finish, header  # bench/report.py, shared by the bench scripts

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## vLLM engine start against the KV cache size and the compile cache (bench/engine_start.py)"
COMPILE_ROWS = ("no-aot", "new-folder", "trained-folder", "new-folder-aot")
OTHER_ROWS = ("default", "quick", "vllm-sampler", "vllm-warmup")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="model alias or folder (default: smollm2-135m)")
    p.add_argument("--rows", default="default,kv16,kv256,no-aot,new-folder,trained-folder,new-folder-aot,vllm-sampler,quick",
                   help="comma-separated rows: default, quick, kvN for N x 1024 tokens, no-aot, new-folder, "
                   "trained-folder, new-folder-aot, vllm-sampler, vllm-warmup (default: %(default)s)")
    p.add_argument("--data", default="everyday", help="prompt set or file (default: the built-in everyday set)")
    p.add_argument("--prompts", type=int, default=64, help="prompts P in the job (default: 64)")
    p.add_argument("--max-tokens", type=int, default=128, help="new tokens per answer at most (default: 128)")
    p.add_argument("--quick", action="store_true", help="smoke run: 8 prompts x 16 tokens, rows default,quick; "
                   "writes nothing")
    p.add_argument("--results", default=str(RESULTS), help="results file (default: bench/RESULTS.md)")
    p.add_argument("--row", help=argparse.SUPPRESS)  # internal: measure one row in this process
    args = p.parse_args(argv)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for r in args.rows:
        if r not in (*OTHER_ROWS, *COMPILE_ROWS) and not (r.startswith("kv") and r[2:].isdigit() and int(r[2:]) > 0):
            p.error(f"--rows: {r!r} is not default, quick, kvN (N thousand tokens, e.g. kv64), "
                    f"{', '.join(COMPILE_ROWS)}, vllm-sampler or vllm-warmup")
    if args.quick:
        args.prompts, args.max_tokens, args.rows = min(args.prompts, 8), min(args.max_tokens, 16), ["default", "quick"]
    return args


def measure(args) -> dict:
    """One row, in this process: start the engine, run the job, report."""
    t0 = time.perf_counter()
    from cai.backends.vllm import VLLMBackend
    from cai.backends.vllm_memory import kv_bytes_per_token
    from cai.models import resolve
    from cai.sources import load_prompts
    from cai.types import SamplingParams

    options: dict = {}
    if args.row == "quick":
        options["quick_start"] = True
    elif args.row.startswith("kv"):
        options["engine_args"] = {"kv_cache_memory_bytes": kv_bytes_per_token(resolve(args.model)) * int(args.row[2:]) * 1024}
    backend = VLLMBackend(args.model, **options)
    start = time.perf_counter() - t0
    cache = backend.llm.llm_engine.vllm_config.cache_config
    tokens_held = (cache.num_gpu_blocks or 0) * cache.block_size
    convs = [p.messages for p in load_prompts(args.data, limit=args.prompts)]
    t1 = time.perf_counter()
    out = backend.generate(convs, SamplingParams(max_tokens=args.max_tokens, temperature=0.7, seed=0))
    seconds = time.perf_counter() - t1
    import resource

    return {"row": args.row, "start": start, "kv_tokens": tokens_held, "seconds": seconds,
            "tokens": sum(c.completion_tokens for c in out), "texts": [c.text for c in out],
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_row(args, row: str) -> dict:
    import shutil
    import tempfile

    from cai.models import resolve

    env, model = dict(os.environ), args.model
    with tempfile.TemporaryDirectory(prefix="cai-engine-start-") as tmp:
        if row == "no-aot":
            env["VLLM_USE_AOT_COMPILE"] = "0"
        if row == "vllm-sampler":
            env["CAI_VLLM_SAMPLER"] = "vllm"
        if row == "vllm-warmup":
            env["CAI_VLLM_WARMUP"] = "vllm"
        if row.startswith("new-folder"):
            model = str(Path(tmp) / "model")
            shutil.copytree(resolve(args.model), model)
            (Path(model) / "cai_run.json").write_text("{}\n")  # what marks a cai training output
        if row == "trained-folder":
            model = str(Path(tmp) / "model")
            shutil.copytree(resolve(args.model), model)
            config = json.loads((Path(model) / "config.json").read_text())
            (Path(model) / "config.json").write_text(json.dumps({**config, "use_cache": False}, indent=2))
            (Path(model) / "cai_run.json").write_text(json.dumps({"command": "sft", "base_model": resolve(args.model)}))
        if row == "new-folder-aot":
            env["VLLM_USE_AOT_COMPILE"] = "1"
            env["VLLM_CACHE_ROOT"] = str(Path(tmp) / "vllm-cache")
        cmd = [sys.executable, __file__, "--row", row, "--model", model, "--data", args.data,
               "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"row {row} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def report(args, rows: list[dict], load_at_start: float) -> str:
    base = next((r for r in rows if r["row"] == "default"), rows[0])
    lines = [
        SECTION, "",
        *header(load_at_start, load_at_end=True),
        f"- job: `vllm:{args.model}`, each row a fresh process (compile caches warmed by a first start, not shown); "
        f"one `generate` of the first {args.prompts} prompts of `{args.data}`, temperature 0.7, at most "
        f"{args.max_tokens} new tokens, seed 0",
        "- start: from importing vLLM to a ready engine; KV tokens: what vLLM allocated; peak RSS: the row's process",
        "", "| row | KV tokens | start | start vs default | job | tokens/s | peak RSS | same answers as default |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        same = "-" if r is base else ("yes" if r["texts"] == base["texts"] else
                                     f"no ({sum(a != b for a, b in zip(r['texts'], base['texts']))} differ)")
        lines.append(f"| {r['row']} | {r['kv_tokens']:,} | {r['start']:.1f} s | {r['start'] / base['start']:.2f}x | "
                     f"{r['seconds']:.1f} s | {r['tokens'] / r['seconds']:.0f} | {r['peak_mib'] / 1024:.1f} GiB | {same} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.row:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        print(json.dumps(measure(args)))
        os._exit(0)  # an in-process engine can hang the interpreter's exit
    load = os.getloadavg()[0]
    print("warming the compile cache (one start, not shown) ...", file=sys.stderr)
    run_row(args, "default")
    rows = []
    for row in args.rows:
        print(f"row {row} ...", file=sys.stderr)
        rows.append(run_row(args, row))
        r = rows[-1]
        print(f"  start {r['start']:.1f} s, {r['kv_tokens']:,} KV tokens, job {r['seconds']:.1f} s", file=sys.stderr)
    return finish(report(args, rows, load), True, quick=args.quick, results=args.results, heading=SECTION)


if __name__ == "__main__":
    sys.exit(main())

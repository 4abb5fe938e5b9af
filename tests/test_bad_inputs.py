"""The bad-input suite (issue 8): each case gets exactly one line, ``cai: error: ...``, naming the
file, line or field and the fix; a non-zero exit; no traceback; and no file already there changed.
Every case fails before a model is loaded (they run on ``mock:`` or stop before loading).

A case is one row of CASES: (id, files to create, argv, fragments the message must hold). In the
files and argv, ``{d}`` is the case's folder. Files named in ``protect`` must not change."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from cai.cli import main

PROMPTS = "".join(json.dumps({"id": f"p{i}", "prompt": f"question {i}"}) + "\n" for i in range(3))
CRITIQUE_REC = json.dumps({"id": "p0", "prompt": [], "final": "x", "provenance": {"stage": "critique"}}) + "\n"
GEN = ["generate", "-m", "mock:", "-i", "{d}/prompts.jsonl"]
CRIT = ["critique", "-m", "mock:", "--prompts", "{d}/prompts.jsonl"]
LABEL = ["label", "--policy", "mock:", "--prompts", "{d}/prompts.jsonl"]
EVAL = ["eval", "labeler", "-m", "mock:", "--data", "hhh", "--limit", "4"]

CASES = [
    # -- output paths: checked first, never damaged
    ("output-is-text-file", {"notes.txt": "my notes, no newline"}, GEN + ["-o", "{d}/notes.txt"],
     ["notes.txt", "not a cai record file", "new -o"]),
    ("output-is-binary", {"blob.jsonl": b"\x00\x01\x02PK\x03\x04"}, GEN + ["-o", "{d}/blob.jsonl"],
     ["blob.jsonl", "binary"]),
    ("output-is-the-prompt-file", {}, CRIT + ["-o", "{d}/prompts.jsonl"], ["prompts.jsonl", "is also an input"]),
    ("label-onto-critique-output", {"sl.jsonl": CRITIQUE_REC}, LABEL + ["-o", "{d}/sl.jsonl"],
     ["sl.jsonl", "`cai critique` records", "new -o"]),
    ("output-is-a-folder", {"out/keep.txt": "x"}, CRIT + ["-o", "{d}/out"], ["is a directory", "file path"]),
    ("eval-output-is-a-folder", {"res/keep.txt": "x"}, EVAL + ["-o", "{d}/res"], ["is a directory"]),
    ("corrupt-middle-line", {"o.jsonl": '{"id": "a", "provenance": {"stage": "generate"}}\nnot json\n{"id": "b"}\n'},
     GEN + ["-o", "{d}/o.jsonl"], ["o.jsonl:2", "not a JSON record"]),
    # -- config files
    ("yaml-malformed", {"run.yaml": "rounds: [2\n"}, CRIT + ["-o", "{d}/o.jsonl", "--config", "{d}/run.yaml"],
     ["run.yaml:2:1", "not valid YAML"]),
    ("yaml-unknown-key", {"run.yaml": "roundz: 2\n"}, CRIT + ["-o", "{d}/o.jsonl", "--config", "{d}/run.yaml"],
     ["run.yaml", "unknown option 'roundz'"]),
    ("yaml-wrong-type", {"run.yaml": 'rounds: "two"\n'}, CRIT + ["-o", "{d}/o.jsonl", "--config", "{d}/run.yaml"],
     ["run.yaml", "rounds must be a whole number", "'two'"]),
    ("yaml-not-a-mapping", {"run.yaml": "- a\n- b\n"}, CRIT + ["-o", "{d}/o.jsonl", "--config", "{d}/run.yaml"],
     ["run.yaml", "mapping"]),
    ("constitution-empty-principles", {"c.yaml": "name: c\nversion: '1'\ndescription: d\nprinciples: []\n"},
     CRIT + ["-o", "{d}/o.jsonl", "-c", "{d}/c.yaml"], ["c.yaml", "principles", "empty"]),
    ("constitution-duplicate-ids", {"c.yaml": "name: c\nversion: '1'\ndescription: d\nprinciples:\n"
                                    "  - {id: a, critique: x, revision: y}\n  - {id: a, critique: x, revision: y}\n"},
     CRIT + ["-o", "{d}/o.jsonl", "-c", "{d}/c.yaml"], ["c.yaml", "duplicate principle id 'a'"]),
    # -- prompt files
    ("prompts-not-utf8", {"p.jsonl": b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n'},
     ["generate", "-m", "mock:", "-i", "{d}/p.jsonl", "-o", "{d}/o.jsonl"], ["p.jsonl:2", "not UTF-8", "iconv"]),
    ("prompts-empty", {"p.jsonl": ""}, ["generate", "-m", "mock:", "-i", "{d}/p.jsonl", "-o", "{d}/o.jsonl"],
     ["p.jsonl", "empty"]),
    ("csv-missing-column", {"p.csv": "a,b\n1,2\n"},
     ["generate", "-m", "mock:", "-i", "{d}/p.csv", "--field", "prompt", "-o", "{d}/o.jsonl"],
     ["p.csv", "no column 'prompt'", "--field"]),
    ("jsonl-broken-line", {"p.jsonl": '{"prompt": "a"}\n{"prompt": "b\n{"prompt": "c"}\n'},
     ["generate", "-m", "mock:", "-i", "{d}/p.jsonl", "-o", "{d}/o.jsonl"], ["p.jsonl:2", "not valid JSON"]),
    ("prompt-file-missing", {}, ["generate", "-m", "mock:", "-i", "{d}/nope.jsonl", "-o", "{d}/o.jsonl"],
     ["nope.jsonl"]),
    # -- numbers
    ("limit-zero", {}, GEN + ["-o", "{d}/o.jsonl", "--limit", "0"], ["limit must be >= 1"]),
    ("batch-size-zero", {}, CRIT + ["-o", "{d}/o.jsonl", "--batch-size", "0"], ["batch_size must be >= 1"]),
    ("max-tokens-negative", {}, GEN + ["-o", "{d}/o.jsonl", "--max-tokens", "-5"], ["max_tokens must be >= 1"]),
    ("temperature-nan", {}, GEN + ["-o", "{d}/o.jsonl", "--temperature", "nan"], ["temperature", "finite"]),
    ("temperature-inf", {}, CRIT + ["-o", "{d}/o.jsonl", "--temperature", "inf"], ["temperature", "finite"]),
    ("temperature-negative", {}, GEN + ["-o", "{d}/o.jsonl", "--temperature", "-1"], ["temperature"]),
    ("top-p-out-of-range", {}, GEN + ["-o", "{d}/o.jsonl", "--top-p", "2"], ["top_p must be in (0, 1]"]),
    ("rounds-zero", {}, CRIT + ["-o", "{d}/o.jsonl", "--rounds", "0"], ["rounds must be >= 1", "chosen == rejected"]),
    ("samples-per-prompt-one", {}, LABEL + ["-o", "{d}/o.jsonl", "-k", "1"], ["--samples-per-prompt", "at least 2"]),
    ("bootstrap-zero", {}, EVAL + ["-o", "{d}/r.json", "--bootstrap", "0"], ["--bootstrap must be at least 1"]),
    ("few-shot-below-minus-one", {}, CRIT + ["-o", "{d}/o.jsonl", "--few-shot", "-2"], ["few_shot", "-1 (all)"]),
    ("serve-n-zero", {}, ["serve", "-m", "mock:", "--max-n", "0"], ["max_n must be >= 1"]),
    # -- models
    ("model-spec-garbage", {}, GEN + ["-o", "{d}/o.jsonl", "-m", "foo:bar:baz"], ["'foo:bar:baz'", "hf:, vllm:"]),
    ("model-unknown-offline", {}, GEN + ["-o", "{d}/o.jsonl", "-m", "hf:no-such-model"],
     ["'no-such-model'", "HF_HUB_OFFLINE"]),
    ("model-missing-path", {}, GEN + ["-o", "{d}/o.jsonl", "-m", "hf:./no/such/dir"], ["does not exist"]),
]


def _make(d: Path, files: dict) -> None:
    (d / "prompts.jsonl").write_text(PROMPTS)
    for name, content in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def run_bad(argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err
    return rc, err


def assert_one_line_error(rc: int, err: str, fragments: list[str]) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("cai: note:")]
    assert rc != 0, f"exit {rc}: {err}"
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("cai: error: "), f"not one error line: {err!r}"
    for f in fragments:
        assert f in lines[0], f"{f!r} missing from: {lines[0]}"
    return lines[0]


def refused_cleanly(d: Path, files: dict, argv: list[str], fragments: list[str], capsys) -> None:
    """``argv`` ({d} is the folder) over ``files`` in ``d`` ends in one line holding ``fragments``,
    exit 2, and leaves every file as it was."""
    _make(d, files)
    before = _snapshot(d)
    rc, err = run_bad([a.replace("{d}", str(d)) for a in argv], capsys)
    assert_one_line_error(rc, err, fragments)
    assert _snapshot(d) == before, "a failed run changed or created files"


@pytest.mark.parametrize("name,files,argv,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, files, argv, fragments, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refused_cleanly(tmp_path, files, argv, fragments, capsys)


def test_valid_last_record_without_newline_is_kept(tmp_path, capsys):
    """The store used to cut any last line lacking a newline, even a whole record."""
    out = tmp_path / "o.jsonl"
    (tmp_path / "p.jsonl").write_text(PROMPTS)
    assert main(["generate", "-m", "mock:", "-i", str(tmp_path / "p.jsonl"), "-o", str(out), "--limit", "2"]) == 0
    out.write_bytes(out.read_bytes().rstrip(b"\n"))  # e.g. an editor that strips the final newline
    assert main(["generate", "-m", "mock:", "-i", str(tmp_path / "p.jsonl"), "-o", str(out)]) == 0
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert ids == ["p0", "p1", "p2"]
    assert "wrote 1 new records" in capsys.readouterr().err


def test_resume_with_other_settings_is_refused_and_says_how_to_start_fresh(tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text(PROMPTS)
    base = ["critique", "-m", "mock:", "--prompts", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "o.jsonl"),
            "--limit", "1"]
    assert main(base) == 0
    before = (tmp_path / "o.jsonl").read_bytes()
    capsys.readouterr()
    rc, err = run_bad(base[:-2] + ["-c", "hhh"], capsys)
    assert_one_line_error(rc, err, ["different constitution", "new -o"])
    rc, err = run_bad(["generate", "-m", "mock:", "-i", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "g.jsonl"),
                       "--limit", "1"], capsys)
    assert rc == 0
    rc, err = run_bad(["generate", "-m", "mock:", "-i", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "g.jsonl"),
                       "--temperature", "0.9", "--limit", "3"], capsys)
    assert_one_line_error(rc, err, ["other settings", "new --output"])
    assert (tmp_path / "o.jsonl").read_bytes() == before


# -- a read-only folder and a full disk ---------------------------------------------------------------

@contextlib.contextmanager
def _mounted(path: Path, options: str):
    """A tmpfs at ``path`` (root only); skips the test where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def read_only_dir(path: Path):
    with _mounted(path, "ro,size=1m") as ok:
        if ok:
            yield path
            return
        if os.geteuid() == 0:
            pytest.skip("root without mount: cannot make a folder read-only")
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)


@pytest.mark.parametrize("argv,fragment", [
    (GEN + ["-o", "{ro}/o.jsonl"], "not writable"),
    (EVAL + ["-o", "{ro}/r.json"], "not writable"),
    (EVAL + ["-o", "{d}/r.json", "--plot", "{ro}/plot.png"], "plot.png is not writable"),
], ids=["generate", "eval-result", "eval-plot"])
def test_read_only_output_folder(argv, fragment, tmp_path, capsys):
    _make(tmp_path, {})
    with read_only_dir(tmp_path / "ro") as ro:
        rc, err = run_bad([a.replace("{d}", str(tmp_path)).replace("{ro}", str(ro)) for a in argv], capsys)
        assert_one_line_error(rc, err, [fragment])
    assert not (tmp_path / "r.json").exists()  # refused before the evaluation ran


def test_full_disk_keeps_written_records(tmp_path, capsys):
    """A real small tmpfs where allowed: the batch that does not fit is not half-written."""
    small = tmp_path / "small"
    with _mounted(small, "size=12k") as ok:
        if not ok:
            pytest.skip("cannot mount a tmpfs here; test_enospc_is_one_clear_line covers it in-process")
        prompts = tmp_path / "p.jsonl"
        prompts.write_text("".join(json.dumps({"id": f"p{i:03d}", "prompt": f"q{i} " + "x" * 200}) + "\n"
                                   for i in range(200)))
        out = small / "o.jsonl"
        rc, err = run_bad(["generate", "-m", "mock:", "-i", str(prompts), "-o", str(out), "--batch-size", "4",
                           "--no-progress"], capsys)
        line = assert_one_line_error(rc, err, ["disk is full", "intact", "run the same command again"])
        recs = [json.loads(x) for x in out.read_text().splitlines()]  # every line whole
        assert recs and len(recs) % 4 == 0 and f"the {len(recs)} records" in line


def test_enospc_is_one_clear_line(tmp_path, capsys, monkeypatch):
    """The same on any machine: the second batch's write fails with ENOSPC part-way."""
    import builtins
    import errno

    import cai.store

    (tmp_path / "p.jsonl").write_text(PROMPTS)
    out = tmp_path / "o.jsonl"
    state = {"n": 0}

    class Full:
        """A file whose second batch meets a full disk half-way."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            state["n"] += 1
            if state["n"] == 2:
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(path, mode="r", *a, **kw):
        f = builtins.open(path, mode, *a, **kw)
        return Full(f) if str(path) == str(out) and "a" in mode else f

    monkeypatch.setattr(cai.store, "open", fake_open, raising=False)
    rc, err = run_bad(["generate", "-m", "mock:", "-i", str(tmp_path / "p.jsonl"), "-o", str(out),
                       "--batch-size", "1", "--no-progress"], capsys)
    assert_one_line_error(rc, err, ["o.jsonl", "disk is full", "the 1 records already there are intact"])
    monkeypatch.undo()
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["p0"]
    assert main(["generate", "-m", "mock:", "-i", str(tmp_path / "p.jsonl"), "-o", str(out), "--batch-size", "1"]) == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["p0", "p1", "p2"]


def test_label_resume_with_another_constitution_or_sampling_is_refused(tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text(PROMPTS)
    base = ["label", "--policy", "mock:", "--prompts", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "l.jsonl")]
    assert main(base + ["--limit", "1", "-c", "default"]) == 0
    before = (tmp_path / "l.jsonl").read_bytes()
    capsys.readouterr()
    for change, what in ((["-c", "hhh"], "constitution"), (["-c", "default", "--temperature", "0.5"], "sampling")):
        rc, err = run_bad(base + change, capsys)
        assert_one_line_error(rc, err, [f"different {what}", "new -o/--output"])
    assert (tmp_path / "l.jsonl").read_bytes() == before
    assert main(base + ["-c", "default"]) == 0  # the same settings resume

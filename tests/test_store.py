"""cai.store.RecordStore repair rules: a batch is whole or gone, a complete record is never cut,
and a file that is not this stage's records is never touched."""

from __future__ import annotations

import json

import pytest

from cai.store import OutputError, RecordStore, check_output, sidecar


def rec(i: int, stage: str = "generate") -> dict:
    return {"id": f"r{i}", "text": "x" * 10, "provenance": {"stage": stage}}


def lines(path) -> list[str]:
    return [json.loads(x)["id"] for x in path.read_text().splitlines() if x.strip()]


def test_a_torn_batch_is_cut_back_to_the_last_commit(tmp_path):
    out = tmp_path / "o.jsonl"
    s = RecordStore(out, stage="generate")
    s.append([rec(0), rec(1)])
    # the next batch died part-way: two whole records of it and a torn third
    with open(out, "a") as f:
        f.write(json.dumps(rec(2)) + "\n" + json.dumps(rec(3)) + "\n" + '{"id": "r4", "te')
    s2 = RecordStore(out, stage="generate")
    assert lines(out) == ["r0", "r1"] and len(s2) == 2


def test_whole_lines_past_the_commit_are_kept(tmp_path):
    """Killed between the write and the commit: the batch is complete, so it stays."""
    out = tmp_path / "o.jsonl"
    RecordStore(out, stage="generate").append([rec(0)])
    with open(out, "a") as f:
        f.write(json.dumps(rec(1)) + "\n")
    assert len(RecordStore(out, stage="generate")) == 2


def test_without_a_commit_only_the_torn_line_goes(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text(json.dumps(rec(0)) + "\n" + json.dumps(rec(1)) + "\n" + '{"id": "r2"')
    s = RecordStore(out, stage="generate")
    assert lines(out) == ["r0", "r1"] and len(s) == 2


def test_a_complete_last_record_without_newline_is_kept_and_appended_after(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text(json.dumps(rec(0)))
    s = RecordStore(out, stage="generate")
    assert len(s) == 1
    s.append([rec(1)])
    assert lines(out) == ["r0", "r1"]


@pytest.mark.parametrize("content,fragment", [
    (b"just some notes", "not a cai record file"),
    (b"\x00\x01binary", "binary"),
    (b'{"prompt": "a question"}\n', "no 'id' field"),
    (b'{"id": "p1", "prompt": "a question"}', "prompt file"),
    (json.dumps(rec(0, "critique")).encode() + b"\n", "`cai critique` records"),
])
def test_foreign_files_are_refused_untouched(tmp_path, content, fragment):
    out = tmp_path / "o.jsonl"
    out.write_bytes(content)
    with pytest.raises(OutputError, match=fragment.replace("(", r"\(")):
        RecordStore(out, stage="generate")
    assert out.read_bytes() == content


def test_check_output_paths(tmp_path):
    with pytest.raises(OutputError, match="is a directory"):
        check_output(tmp_path)
    check_output(tmp_path / "new" / "deeper" / "o.jsonl")  # folders that do not exist yet are fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        check_output(tmp_path / "file" / "o.jsonl")
    assert sidecar(tmp_path / "o.jsonl", "skipped").name == "o.skipped.jsonl"


def test_nan_is_refused_not_written(tmp_path):
    from cai.errors import CAIError

    s = RecordStore(tmp_path / "o.jsonl")
    with pytest.raises(CAIError, match="NaN or infinity"):
        s.append([{"id": "a", "p": float("nan")}])
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").read_text() == ""


# -- issue 17: --overwrite, inputs, devices and the real writability check --------------------------

def test_overwrite_replaces_a_foreign_file_only_at_the_first_write(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text("my notes\n")
    s = RecordStore(out, stage="generate", overwrite=True)
    assert len(s) == 0 and list(s) == [] and out.read_text() == "my notes\n"  # opening changes nothing
    s.append([rec(0), rec(1)])
    assert lines(out) == ["r0", "r1"]
    assert len(RecordStore(out, stage="generate")) == 2  # now cai's own: resumed


def test_an_input_is_never_the_output(tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text(json.dumps(rec(0)) + "\n")
    for kw in ({}, {"overwrite": True}):
        with pytest.raises(OutputError, match="is also an input"):
            RecordStore(p, stage="generate", inputs=[f"hh-rlhf:{p}"], **kw)
        with pytest.raises(OutputError, match="is also an input"):
            check_output(p, inputs=[f"{p}:0.5"], **kw)


def test_devices_and_unwritable_folders_fail_up_front_and_leave_nothing(tmp_path):
    import os

    before = set(os.listdir("/dev"))
    with pytest.raises(OutputError, match="not a regular file"):
        RecordStore("/dev/null", stage="generate")
    assert set(os.listdir("/dev")) == before  # no /dev/.null.commit
    for path in ("/proc/cai-test/o.jsonl", "/sys/kernel/cai-o.jsonl"):
        with pytest.raises(OutputError, match="not writable: cannot create a file in"):
            check_output(path)
    check_output(tmp_path / "new" / "o.jsonl")
    assert os.listdir(tmp_path) == []  # the write check's file is gone again


def test_cai_knows_its_own_files(tmp_path):
    from cai.outputs import foreign, mark_png, png_marked

    png = tmp_path / "a.png"
    plain = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + b"\0" * 17 + b"\0\0\0\0IEND\xaeB`\x82"
    png.write_bytes(plain)
    assert not png_marked(png) and foreign(png, "png")
    png.write_bytes(mark_png(plain))
    assert png_marked(png) and foreign(png, "png") is None
    res = tmp_path / "r.json"
    res.write_text(json.dumps({"kind": "cai-eval-result", "task": "hhh"}))
    assert foreign(res, "result:hhh") is None
    assert "`cai eval hhh` result, not a `cai eval truthfulqa` one" in foreign(res, "result:truthfulqa")
    page = tmp_path / "r.html"
    page.write_text('<!doctype html><meta name="generator" content="cai 0.1">')
    assert foreign(page, "html") is None
    page.write_text("<html>mine</html>")
    assert foreign(page, "html") == "is not a report cai wrote"

"""`cai run` forks each step's process from a server that imported the libraries once
(:mod:`cai.run.step_server`): the steps give what fresh processes give, a killed step is reported
as killed, and machines where forking is unsafe start fresh interpreters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cai.cli import main

SPEC = {"model": "mock:", "constitution": "default", "stages": ["critique", "label"],
        "critique": {"prompts": "prompts.jsonl", "rounds": 1, "batch_size": 2},
        "label": {"prompts": "prompts.jsonl", "limit": 4, "batch_size": 2}}


@pytest.fixture
def servers(monkeypatch) -> list:
    """The server the runner passes for each group of steps (None: a fresh interpreter). The mock
    backend loads no libraries, so cai would start no server for it: here it does, unless the test
    turns servers off."""
    import cai.run.runner as runner
    import cai.run.step_server as step_server

    real_wanted = step_server.wanted
    monkeypatch.setattr(step_server, "wanted", lambda configs: real_wanted([{"model": "a"}, {"model": "b"}]))
    seen: list = []
    real = runner.run_child

    def run_child(*files, server=None):
        seen.append(server)
        return real(*files, server=server)

    monkeypatch.setattr(runner, "run_child", run_child)
    return seen


def _run(d: Path, name: str) -> int:
    d.mkdir(exist_ok=True)
    (d / "prompts.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"How do I do thing {i}?"}) + "\n"
                                             for i in range(5)))
    (d / "run.yaml").write_text(yaml.safe_dump(SPEC))
    return main(["run", str(d / "run.yaml"), "-o", str(d / name)])


def _finals(run: Path) -> list[str]:
    (path,) = run.glob("critique-*/critique.jsonl")
    return [json.loads(line)["final"] for line in path.read_text().splitlines()]


def test_steps_forked_from_the_server_give_what_fresh_processes_give(tmp_path, servers, monkeypatch):
    from cai.run.step_server import StepServer

    assert _run(tmp_path, "forked") == 0
    assert len(servers) == 2 and all(isinstance(s, StepServer) for s in servers)
    assert servers[0] is servers[1] and servers[0].proc.returncode == 0  # one server, gone at the run's end
    monkeypatch.setenv("CAI_STEP_SERVER", "0")
    assert _run(tmp_path, "fresh") == 0
    assert servers[2:] == [None, None]
    assert _finals(tmp_path / "forked") == _finals(tmp_path / "fresh") and _finals(tmp_path / "fresh")
    for name in ("forked", "fresh"):
        stages = json.loads((tmp_path / name / "manifest.json").read_text())["stages"]
        assert [s["status"] for s in stages.values()] == ["done", "done"]
        assert all(s["peak_rss_mb"] > 0 for s in stages.values())  # the child's own peak, from the server


def test_a_forked_step_killed_by_a_signal_is_reported_as_killed(tmp_path, servers, monkeypatch, capfd):
    monkeypatch.setenv("CAI_FAULT", "mid_write:1")  # the step's process kills itself (SIGKILL), not the runner
    assert _run(tmp_path, "run") != 0
    assert capfd.readouterr().err.strip().splitlines()[-1] == (
        "cai: error: step critique was killed (SIGKILL, often out of memory); run the same command again to "
        "resume from it")
    assert servers and servers[0] is not None
    monkeypatch.delenv("CAI_FAULT")
    assert _run(tmp_path, "run") == 0  # resumed in a new server's child
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert [s["status"] for s in stages.values()] == ["done", "done"]


def test_no_server_where_forking_is_unsafe(tmp_path, monkeypatch):
    import cai.run.step_server as step_server

    monkeypatch.delenv("CAI_STEP_SERVER", raising=False)
    monkeypatch.setattr(step_server, "GPU_DEVICES", (str(tmp_path / "nvidiactl"),))
    two = [{"model": "smollm2-135m"}, {"policy": "runs/x/sft/model"}, {}]
    assert step_server.wanted(two)
    assert not step_server.wanted(two[:1] + [{"model": "mock:"}])  # one model: nothing to share
    monkeypatch.setenv("CAI_STEP_SERVER", "0")
    assert not step_server.wanted(two)
    monkeypatch.delenv("CAI_STEP_SERVER")
    monkeypatch.setattr(step_server.sys, "platform", "darwin")
    assert not step_server.wanted(two)
    monkeypatch.setattr(step_server.sys, "platform", "linux")
    (tmp_path / "nvidiactl").write_text("")  # a GPU driver: CUDA cannot be used in a forked child
    assert not step_server.wanted(two)
    with step_server.step_server(two) as server:
        assert server is None


def test_steps_start_fresh_when_the_server_is_gone_before_them(tmp_path, servers, monkeypatch):
    import cai.run.runner as runner

    forked = runner.run_child

    def kill_the_server_first(*files, server=None):
        if server is not None and server.proc.poll() is None:
            server.proc.kill()  # from outside, before the first step: it never reaches a child
            server.proc.wait()
        return forked(*files, server=server)

    monkeypatch.setattr(runner, "run_child", kill_the_server_first)
    assert _run(tmp_path, "run") == 0
    assert servers and not servers[0].alive
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert [s["status"] for s in stages.values()] == ["done", "done"]


def test_the_preload_computes_a_per_process_cache_once_for_every_child(monkeypatch):
    """PRELOAD_CALLS run in the server, so forked steps inherit their cached values; one that fails
    leaves the step to compute it itself."""
    import sys
    import types

    import cai.run.step_server as step_server

    assert "triton_key" in step_server.PRELOAD_CALLS["torch._inductor.codecache"]
    calls = []
    fake = types.ModuleType("cai_fake_cache")
    fake.key = lambda: calls.append("key")
    fake.broken = lambda: 1 / 0
    monkeypatch.setitem(sys.modules, "cai_fake_cache", fake)
    monkeypatch.setattr(step_server, "PRELOAD", ())
    monkeypatch.setattr(step_server, "PRELOAD_CALLS", {"cai_fake_cache": ("broken",), "cai_fake_cache.x": ("key",)})
    step_server._preload()  # neither the error nor the missing module escapes
    monkeypatch.setattr(step_server, "PRELOAD_CALLS", {"cai_fake_cache": ("key",)})
    step_server._preload()
    assert calls == ["key"]


def test_the_server_freezes_what_it_holds_before_it_forks(monkeypatch):
    """A forked step's full garbage collections skip the server's objects (gc.freeze)."""
    import gc

    import cai.run.step_server as step_server

    monkeypatch.setattr(step_server, "PRELOAD", ())
    monkeypatch.setattr(step_server, "PRELOAD_CALLS", {})
    held = ["made before the fork"]  # a list: tracked by the collector
    assert gc.get_freeze_count() == 0
    try:
        step_server._prepare_for_forks()
        assert gc.get_freeze_count() > 0
        assert not any(o is held for o in gc.get_objects())  # frozen objects are no generation's
    finally:
        gc.unfreeze()

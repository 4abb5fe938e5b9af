"""A SIGTERM to `cai run` (kill, timeout, docker stop) reaches the runner alone, not its step's
process as Ctrl-C from a terminal does: the runner passes it on, records the step as interrupted and
exits 143, and no step runs on orphaned, writing into the run folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

# Added to the slow mock's sitecustomize (tests/conftest.py): a step server for the mock backend,
# which cai would start only for steps that load models.
WITH_SERVER = "\nfrom cai.run import step_server\nstep_server.wanted = lambda configs=(): True\n"


def _lines(run_dir: Path) -> int:
    return sum(p.read_text().count("\n") for p in run_dir.glob("critique-*/critique*.jsonl"))


@pytest.mark.parametrize("background", [False, True], ids=["foreground", "sigint-ignored"])
@pytest.mark.parametrize("server", [False, True], ids=["fresh-process", "step-server"])
def test_sigterm_interrupts_the_step_and_records_it(tmp_path, slow_mock_env, server, background):
    """``background``: started as `nohup cai run ... &` starts it, with SIGINT ignored, which its
    step's process inherits."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"How do I do thing {i}?"}) + "\n"
                               for i in range(8)))
    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump({"model": "mock:", "constitution": "default", "stages": ["critique"],
                                    "critique": {"prompts": str(prompts), "rounds": 1, "batch_size": 1}}))
    env = slow_mock_env(0.3)
    if server:
        site = Path(env["PYTHONPATH"].split(os.pathsep)[0]) / "sitecustomize.py"
        site.write_text(site.read_text() + WITH_SERVER)
    else:
        env["CAI_STEP_SERVER"] = "0"
    run_dir = tmp_path / "run"
    ignore_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None
    proc = subprocess.Popen([sys.executable, "-m", "cai", "run", str(spec), "-o", str(run_dir)], env=env,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=ignore_sigint)
    try:
        deadline = time.time() + 120
        while _lines(run_dir) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert _lines(run_dir) >= 2, "the critique step never wrote its first records"
        proc.send_signal(signal.SIGTERM)  # the runner alone, as `kill PID` does
        _, err = proc.communicate(timeout=60)
        written = _lines(run_dir)
        time.sleep(1.5)  # five more mock calls' time: an orphaned step would have written more by now
        assert _lines(run_dir) == written
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever of the run's session is left
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted; finished batches are saved" in err and "Traceback" not in err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["critique"]["status"] == "interrupted"
    assert not list(run_dir.glob("critique-*/summary.json"))

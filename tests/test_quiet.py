"""Third-party logs kept to errors (cai.quiet): the levels and environment a command runs with,
``--verbose``/``CAI_VERBOSE`` leaving them alone, a user's own setting winning, step processes
of ``cai run`` inheriting it, and a process's stderr holding only cai's lines and real errors."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cai import quiet
from cai.quiet import ENV, LOGGERS, VERBOSE_ENV, quiet_libraries

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def clean_env(monkeypatch):
    """No quiet settings in the environment, the library loggers at NOTSET; both put back after."""
    for key in [*ENV, VERBOSE_ENV]:
        monkeypatch.delenv(key, raising=False)
    before = _levels()
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield monkeypatch
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


def _levels() -> dict[str, int]:
    return {name: logging.getLogger(name).level for name in LOGGERS}


def test_libraries_log_errors_only_inside_and_are_restored_after(clean_env):
    with quiet_libraries():
        assert {k: os.environ.get(k) for k in ENV} == ENV
        assert _levels() == {name: logging.ERROR for name in LOGGERS}
        # vLLM's import-time Triton line is logged before vLLM configures a handler: the level stops it.
        triton = logging.getLogger("vllm.triton_utils.importing")
        assert not triton.isEnabledFor(logging.WARNING) and triton.isEnabledFor(logging.ERROR)
        assert not logging.getLogger("transformers.trainer_utils").isEnabledFor(logging.WARNING)
    assert not any(k in os.environ for k in ENV)
    assert _levels() == {name: logging.NOTSET for name in LOGGERS}
    assert logging.getLogger("vllm.triton_utils.importing").isEnabledFor(logging.WARNING)


def test_a_users_own_level_wins(clean_env):
    clean_env.setenv("VLLM_LOGGING_LEVEL", "INFO")
    clean_env.setenv("TRANSFORMERS_VERBOSITY", "detail")  # a format, not a level: left to transformers
    with quiet_libraries():
        assert os.environ["VLLM_LOGGING_LEVEL"] == "INFO" and os.environ["TORCH_CPP_LOG_LEVEL"] == "ERROR"
        assert logging.getLogger("vllm").level == logging.INFO
        assert logging.getLogger("transformers").level == logging.NOTSET
    assert os.environ["VLLM_LOGGING_LEVEL"] == "INFO" and "TORCH_CPP_LOG_LEVEL" not in os.environ


@pytest.mark.parametrize("how", ["flag", "env"])
def test_verbose_leaves_the_libraries_alone(how, clean_env):
    if how == "env":
        clean_env.setenv(VERBOSE_ENV, "1")
    with quiet_libraries(verbose=how == "flag"):
        assert os.environ[VERBOSE_ENV] == "1"  # what the step processes of `cai run` see
        assert not any(k in os.environ for k in ENV)
        assert _levels() == {name: logging.NOTSET for name in LOGGERS}
        assert logging.getLogger("vllm.triton_utils.importing").isEnabledFor(logging.WARNING)
    assert (VERBOSE_ENV in os.environ) == (how == "env")


def test_verbose_flag_beats_cai_verbose_0(clean_env):
    clean_env.setenv(VERBOSE_ENV, "0")
    with quiet_libraries(verbose=True):
        assert quiet.verbose_requested() and "VLLM_LOGGING_LEVEL" not in os.environ
    assert os.environ[VERBOSE_ENV] == "0"


def _recording_parser(build_parser, seen: dict) -> argparse.ArgumentParser:
    """`cai` with one more command, which records what its handler ran with."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.add_parser("probe")

    def handler(args):
        seen.update(env={k: os.environ.get(k) for k in [*ENV, VERBOSE_ENV]}, levels=_levels())
        return 0

    p.set_defaults(func=handler)
    return parser


@pytest.mark.parametrize("argv, verbose", [(["probe"], False), (["--verbose", "probe"], True),
                                           (["probe", "--verbose"], True), (["probe", "-v"], True)])
def test_every_command_runs_quiet_unless_verbose(argv, verbose, clean_env):
    import cai.cli

    seen: dict = {}
    build = cai.cli.build_parser
    clean_env.setattr(cai.cli, "build_parser", lambda: _recording_parser(build, seen))
    assert cai.cli.main(argv) == 0
    if verbose:
        assert seen["env"] == {**{k: None for k in ENV}, VERBOSE_ENV: "1"}
    else:
        assert seen["env"] == {**ENV, VERBOSE_ENV: None}
        assert set(seen["levels"].values()) == {logging.ERROR}
    assert not any(k in os.environ for k in [*ENV, VERBOSE_ENV])


def test_cai_run_hands_the_quiet_environment_to_its_step_processes(clean_env, tmp_path):
    from cai.run import processes, stages

    with quiet_libraries():
        child = processes.child_env()
    assert all(child[k] == v for k, v in ENV.items())
    # ... and each step process keeps its own libraries quiet (it imports them afresh).
    seen: dict = {}

    def run_step(stage, config, *, where):
        seen.update(env={k: os.environ.get(k) for k in ENV}, levels=_levels())
        return {}

    clean_env.setattr(stages, "run_step", run_step)
    step = tmp_path / "step.json"
    step.write_text(json.dumps({"name": "x", "stage": "critique", "section": "critique", "config": {}}))
    assert stages.main([str(step)]) == 0
    assert seen == {"env": ENV, "levels": {name: logging.ERROR for name in LOGGERS}}


def test_vllm_draws_its_loading_bar_only_on_a_terminal_or_when_verbose(clean_env, vllm_start_args, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    clean_env.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    # Not on a CPU: no CPU sizing, only the arguments matter here.
    assert vllm_start_args(tmp_path, False)["use_tqdm_on_load"] is False
    clean_env.setenv(VERBOSE_ENV, "1")
    assert vllm_start_args(tmp_path, False)["use_tqdm_on_load"] is True


# What a step process that loads vLLM and trains with transformers writes to stderr, through the
# same channels: vLLM's import-time line (no handler yet: Python's last resort), vLLM's own handler
# at the level its environment variable gives, torch's C++ log (a real TORCH_WARN, as vLLM's NUMA
# line is), transformers' logger (configured on first use from TRANSFORMERS_VERBOSITY), and cai's
# own line. vLLM itself is too slow to start here.
NOISY_STEP = """
import logging, logging.config, os, sys
from cai.quiet import quiet_libraries
with quiet_libraries():
    import torch
    out = torch.ones(2)
    torch.ops.aten.add.out(torch.ones(3), torch.ones(3), out=out)  # [W... Resize.cpp] Warning: ... resized
    logging.getLogger("vllm.triton_utils.importing").warning("Triton is installed, but doesn't include CPU backend.")
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
        "handlers": {"vllm": {"class": "logging.StreamHandler", "level": os.environ.get("VLLM_LOGGING_LEVEL", "INFO"),
                              "stream": "ext://sys.stderr"}},
        "loggers": {"vllm": {"handlers": ["vllm"], "level": os.environ.get("VLLM_LOGGING_LEVEL", "INFO"),
                             "propagate": False}}})
    for _ in range(3):
        logging.getLogger("vllm.v1.worker.cpu_worker").warning("libtcmalloc is not found in LD_PRELOAD.")
    logging.getLogger("vllm.v1.engine.core").error("EngineCore failed to start.")
    from transformers.utils import logging as hf_logging
    hf_logging.get_logger("transformers.trainer_utils").warning("mtime may not be reliable on this filesystem")
    print("cai: generated 4 records", file=sys.stderr)
"""


def _stderr_lines(env_extra: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in [*ENV, VERBOSE_ENV]}
    env.update(PYTHONPATH=SRC + os.pathsep + env.get("PYTHONPATH", ""), **env_extra)
    proc = subprocess.run([sys.executable, "-c", NOISY_STEP], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr.splitlines()


def test_a_quiet_process_writes_only_cais_lines_and_real_errors():
    lines = _stderr_lines({})
    foreign = [line for line in lines if not line.startswith("cai")]
    assert foreign == ["EngineCore failed to start."]  # errors stay visible
    assert "cai: generated 4 records" in lines
    # --verbose (CAI_VERBOSE=1 in a step process) gives every line back.
    loud = [line for line in _stderr_lines({VERBOSE_ENV: "1"}) if not line.startswith("cai")]
    assert len(loud) == 7 and any("Resize.cpp" in line for line in loud), loud


def test_cai_serve_keeps_vllm_servers_own_log():
    """vLLM's server says through its log when it is up: `cai serve` runs as with --verbose."""
    from cai.cli import build_parser

    assert build_parser().parse_args(["serve", "-m", "mock:"]).library_logs is True


def test_pm_load_draws_no_weights_bar(tiny_llama_dir, tmp_path, capfd):
    """`cai eval grader --grader pm:` and the RL trainers load a PM from a local folder: transformers'
    per-tensor "Loading weights" bar only filled logs (a redraw per tensor), so it is off while the
    weights load, and the user's setting is back afterwards."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from cai.train.pm import PreferenceModel

    torch.manual_seed(0)
    pm_dir = tmp_path / "pm"
    AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir, num_labels=1).save_pretrained(pm_dir)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(pm_dir)
    hf_logging.enable_progress_bar()
    capfd.readouterr()
    PreferenceModel.load(pm_dir)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()

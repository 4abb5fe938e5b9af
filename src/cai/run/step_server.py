"""A process that imports the libraries once and forks one child per step of ``cai run``.

Each step runs in a process of its own, so that its memory goes back to the system when it ends
(:mod:`cai.run.processes`). A fresh interpreter pays for its imports every time: torch,
transformers, TRL, PEFT, datasets and vLLM take about 7 s on a 2-core CPU, about 35 s over the
quickstart's seven step processes. The step server imports them once, then forks a child for each
step (group): the child starts with the libraries in memory, runs :func:`cai.run.stages.main` and
exits; its memory goes back as a fresh process's does.

Forking is safe only where no library has started what a fork cannot copy. Importing starts no
compute threads (torch's pools start at the first parallel op, which the server never runs), but a
GPU runtime touched before the fork cannot be used in the child, so on a machine with a GPU every
step starts a fresh interpreter, as it does with ``CAI_STEP_SERVER=0`` and on systems other than
Linux. There the imports are a small part of a step anyway.

Protocol (one line of JSON each way, on two pipes): the runner sends the list of step files; the
server forks, waits for the child and answers with its wait status and peak RSS.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, NoReturn

from cai.env_flags import env_switch
from cai.run.processes import child_env

ENV = "CAI_STEP_SERVER"
# Imported by the server before its first fork: what the steps' processes import anyway. Each is
# optional (vLLM is not installed everywhere). vLLM's CPU worker is what an engine start imports
# after `vllm.LLM`: 0.7 s of its 0.8 s of new modules (an engine runs in the step's own process).
PRELOAD = ("torch", "transformers", "trl", "peft", "datasets", "vllm", "vllm.v1.worker.cpu_worker", "cai.run.stages")
# Names whose import does most of the work of a step's first lines (lazy modules import on access).
PRELOAD_ATTRS = {"transformers": ("AutoModelForCausalLM", "AutoModelForSequenceClassification", "AutoTokenizer",
                                  "Trainer"),
                 "trl": ("SFTTrainer", "RewardTrainer", "DPOTrainer"), "vllm": ("LLM",)}
# Values a library caches per process, computed once here so every child inherits them: Inductor
# hashes Triton's library and sources (0.8 s) for its cache key at each compiled vLLM engine start.
PRELOAD_CALLS = {"torch._inductor.codecache": ("triton_key",)}
# A GPU driver's device files: on such a machine no step is forked.
GPU_DEVICES = ("/dev/nvidiactl", "/dev/kfd")


def wanted(configs: Iterable[dict[str, Any]] = ()) -> bool:
    """Whether ``cai run`` forks the steps of these configs from a step server on this machine: only
    where two or more of them load a model (a mock backend imports none of the libraries, and one
    step alone pays its imports either way)."""
    if env_switch(ENV) is False:
        return False
    # Linux only: macOS's system frameworks are not safe to use in a forked child (Python's
    # multiprocessing spawns there for that reason).
    if not sys.platform.startswith("linux") or any(Path(p).exists() for p in GPU_DEVICES):
        return False
    models = [c.get("model") or c.get("policy") for c in configs]
    return sum(isinstance(m, str) and not m.startswith("mock:") for m in models) >= 2


class StepServer:
    """The runner's end: start the server, run step groups through it, close it. A server that has
    gone away (killed from outside) is not restarted: :attr:`alive` turns false and the runner
    starts fresh processes for the remaining steps."""

    def __init__(self, env: dict[str, str]) -> None:
        to_server, self._request = os.pipe()
        self._reply, from_server = os.pipe()
        # -c, not -m: `cai.run` imports this module, and runpy warns when a package's import has
        # already loaded the module it is asked to run.
        code = f"from cai.run.step_server import serve; serve({to_server}, {from_server})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(to_server, from_server), env=env)
        os.close(to_server)
        os.close(from_server)
        self.requests = os.fdopen(self._request, "w")
        self.replies = os.fdopen(self._reply)
        self.alive = True

    def run(self, *step_files: Path) -> tuple[int, float] | None:
        """Run the steps in a child of the server; (exit code as ``Popen.returncode`` gives it, the
        child's peak RSS in MiB), or None when the server was gone before the steps started (the
        caller starts them fresh). Ctrl-C reaches the child too: wait for it to end, then raise."""
        try:
            self.requests.write(json.dumps([str(f) for f in step_files]) + "\n")
            self.requests.flush()
        except BrokenPipeError:
            self.alive = False
            return None
        interrupted: KeyboardInterrupt | None = None
        while True:
            try:
                line = self.replies.readline()
                break
            except KeyboardInterrupt as e:  # a SIGTERM's Terminated too: raised as it came
                interrupted = e
        if interrupted is not None:
            raise interrupted
        if not line:  # the server died while the steps ran: how they ended is unknown, a crash
            self.alive = False
            return 1, 0.0
        reply = json.loads(line)
        return os.waitstatus_to_exitcode(reply["status"]), reply["maxrss_kib"] / 1024

    def close(self) -> None:
        for f in (self.requests, self.replies):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=60)  # EOF on its requests: it exits
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def step_server(configs: Iterable[dict[str, Any]]) -> Iterator[StepServer | None]:
    """A step server for the steps of ``configs`` where :func:`wanted`, else None (each step a fresh
    interpreter). Its imports delay the first step no more than that step's own would."""
    if not wanted(configs):
        yield None
        return
    server = StepServer(child_env())
    try:
        yield server
    finally:
        server.close()


def _prepare_for_forks() -> None:
    """Import and compute what the steps share (:func:`_preload`), then move every object the server
    holds (740,000 after the imports) into the garbage collector's permanent generation
    (``gc.freeze``): a child's full collections then skip them. Without it each full collection
    in a child walked all of them, 0.3-0.5 s a time, and wrote to every page it walked, copying the
    server's memory into the child; steps collect in vLLM's and accelerate's clean-ups and on their
    own (measured by hand: 0.46 s against under 1 ms, bench/RESULTS.md)."""
    import gc

    _preload()
    gc.freeze()


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            module = importlib.import_module(name)
            for attr in PRELOAD_ATTRS.get(name, ()):
                getattr(module, attr)
        except Exception:  # noqa: BLE001 - a library that fails to import fails in the step that needs it
            pass
    for name, calls in PRELOAD_CALLS.items():
        try:
            module = importlib.import_module(name)
            for call in calls:
                getattr(module, call)()
        except Exception:  # noqa: BLE001 - as above: the step that needs it computes it itself
            pass


def _child(step_files: list[str]) -> None:
    """In the forked child: run the steps as ``python -m cai.run.stages`` would, then exit."""
    import atexit
    import traceback

    signal.signal(signal.SIGINT, signal.default_int_handler)
    code: Any = 1
    interrupted = False
    try:
        from cai.run import stages

        sys.argv = [stages.__file__, *step_files]  # as `python -m cai.run.stages FILES` has it
        code = stages.main(step_files)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:  # noqa: BLE001 - what an interpreter prints for an uncaught exception
        traceback.print_exc()
    try:
        atexit._run_exitfuncs()  # what a fresh interpreter runs at its end (engines' shutdown hooks)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if interrupted:  # end as Python does on an uncaught Ctrl-C: killed by SIGINT
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code if isinstance(code, int) else 1)


def serve(request_fd: int, reply_fd: int) -> NoReturn:
    """The server's loop: one forked child per request, one answer per child."""
    from cai.quiet import quiet_libraries

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the step and the runner
    step = 0  # the forked step's pid while one runs
    # The runner passes a SIGTERM on here (cai.run.processes.sigterm_as_interrupt): the step is
    # interrupted as by Ctrl-C, and the answer tells the runner how it ended.

    def on_term(signum: int, frame: Any) -> None:
        if step:
            with contextlib.suppress(ProcessLookupError):
                os.kill(step, signal.SIGINT)

    signal.signal(signal.SIGTERM, on_term)
    with quiet_libraries():  # as the steps import them: the same log levels at import
        _prepare_for_forks()
    with os.fdopen(request_fd) as requests, os.fdopen(reply_fd, "w") as replies:
        for line in requests:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                requests.close()
                replies.close()
                _child(json.loads(line))
            step = pid
            _, status, usage = os.wait4(pid, 0)
            step = 0
            replies.write(json.dumps({"status": status, "maxrss_kib": usage.ru_maxrss}) + "\n")
            replies.flush()
    # Ends as its children do, without the interpreter's teardown: it has nothing left to write,
    # and there Triton's bindings (loaded for the preloaded cache key) print reference-leak notices.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

"""Rewards for RL and grading: one callable shape, loaded from a spec string.

A reward is any callable ``reward(prompts, completions) -> list[float]`` where ``prompts`` are
conversations (lists of ``{"role", "content"}`` dicts ending with the user turn) and
``completions`` the answers' texts, one score per pair. ``cai ppo``, ``cai rloo`` and the evals
take the same object. :func:`load_reward` turns a spec into one:

- ``DIR`` or ``pm:DIR``: a preference model folder written by ``cai reward``; the score is the
  PM's scalar output for the conversation with the answer appended;
- ``module:function`` or ``path/to/file.py:function``: any importable callable of the shape above;
- ``judge:MODEL``: a constitution judge. For each answer it asks MODEL, for each principle of the
  constitution (all of them, N sampled, or named ones), whether the answer follows it, and scores
  "Yes"/"No" through ``Backend.score_options`` (no text is generated). The reward is P(yes)
  normalised over the two options, averaged over the principles. The wording lives in
  ``templates/reward.yaml``.

Every reward returned is wrapped in :class:`Reward`, which checks that the callable returned one
finite number per answer, so a broken reward fails at its first call with a message naming it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import random
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from cai.errors import CAIError
from cai.types import Conversation

__all__ = ["Reward", "JudgeReward", "load_reward", "reward_fingerprint"]

RewardFn = Callable[[list[Conversation], list[str]], Sequence[float]]

_KINDS_HELP = ("a preference-model folder written by `cai reward` (DIR or pm:DIR), an importable callable "
               "(module:function or path/to/file.py:function), or a constitution judge (judge:MODEL with -c)")


class Reward:
    """A checked reward: calls ``fn`` and insists on one finite float per completion.

    ``name`` is the spec it came from (for run records); ``info`` says what it is.
    """

    def __init__(self, fn: RewardFn, name: str, info: dict[str, Any] | None = None) -> None:
        self.fn, self.name, self.info = fn, name, dict(info or {})

    def __call__(self, prompts: Sequence[Conversation], completions: Sequence[str]) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"reward {self.name}: got {len(prompts)} prompts for {len(completions)} completions")
        if not completions:
            return []
        try:
            out = self.fn(list(prompts), list(completions))
        except CAIError:
            raise
        except Exception as e:  # a user's function: its error is the news, not cai's stack
            raise CAIError(f"reward {self.name} raised {_first_line(e)} (called on {len(completions)} "
                           "answers); fix it and run the same command again (--traceback shows where it "
                           "failed)") from e
        try:
            # float("1.5") would pass a reward that returns text, and a string iterates as characters.
            if isinstance(out, (str, bytes)) or any(isinstance(v, (str, bytes)) for v in out):
                raise TypeError
            values = [float(v) for v in out]
        except (TypeError, ValueError):
            raise CAIError(f"reward {self.name}: must return a list of numbers, got {out!r:.80}") from None
        if len(values) != len(completions):
            raise CAIError(f"reward {self.name}: returned {len(values)} scores for {len(completions)} completions; "
                           "return one number per completion")
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise CAIError(f"reward {self.name}: returned a non-finite score ({values[bad[0]]}) for completion {bad[0]}")
        return values

    def __repr__(self) -> str:
        return f"Reward({self.name!r})"


def load_reward(spec: str | RewardFn, *, constitution: Any = "default", principles: str | int = "all",
                seed: int = 0, backend_options: dict[str, Any] | None = None) -> Reward:
    """The reward a spec names (see the module docstring).

    ``constitution`` and ``principles`` configure a ``judge:`` reward (principles: ``all``,
    ``sample`` for one drawn per answer, seeded by ``seed`` and the answer text, an integer N for
    N drawn, or comma-separated ids); ``backend_options`` go to the judge's ``load_backend``. A
    callable passed instead of a string is wrapped as it is.
    """
    if isinstance(spec, Reward):
        return spec
    if callable(spec):
        return Reward(spec, getattr(spec, "__name__", repr(spec)), {"kind": "callable"})
    if not isinstance(spec, str) or not spec.strip():
        raise CAIError(f"--reward: empty spec; give {_KINDS_HELP}")
    spec = spec.strip()
    if spec.startswith("judge:"):
        model = spec[len("judge:"):]
        if not model:
            raise CAIError("--reward judge: needs a model, e.g. judge:smollm2-135m or judge:hf:PATH")
        from cai.backends import load_backend
        from cai.constitution import load_constitution

        judge = JudgeReward(load_backend(model, **(backend_options or {})), load_constitution(constitution),
                            principles=principles, seed=seed)
        return Reward(judge, spec, judge.info)
    if spec.startswith("pm:"):
        return _pm_reward(spec[len("pm:"):], spec)
    if Path(spec).expanduser().is_dir():
        return _pm_reward(spec, spec)
    if ":" in spec:
        return Reward(_import_callable(spec), spec, {"kind": "callable", "target": spec})
    raise CAIError(f"--reward {spec}: no such folder, and not module:function or judge:MODEL; give {_KINDS_HELP}")


def reward_fingerprint(spec: Any) -> dict[str, Any] | None:
    """A run-identity entry for what ``spec`` scores with, read without loading it: the PM folder's run
    record (or config and file sizes) or the reward file's bytes. The spec string alone let a PPO or
    RLOO run resume against a PM retrained into the same folder, mixing two rewards in one run."""
    if not isinstance(spec, str) or spec.startswith("judge:"):
        return None
    target = spec[len("pm:"):] if spec.startswith("pm:") else spec
    folder, h = Path(target).expanduser(), hashlib.sha256()
    if folder.is_dir():
        record = folder / "cai_run.json"
        if record.is_file():
            h.update(record.read_bytes())
        else:
            for f in sorted(folder.iterdir()):
                if f.is_file():
                    h.update(f"{f.name}:{f.stat().st_size}\n".encode())
                    if f.suffix == ".json":
                        h.update(f.read_bytes())
    else:
        target = spec.rpartition(":")[0]
        file = Path(target).expanduser() if target.endswith(".py") else _module_file(target)
        if file is None or not file.is_file():
            return None  # a built-in or compiled module, or no such file (load_reward says which)
        h.update(file.read_bytes())
    return {"role": "reward", "path": spec, "sha256": h.hexdigest(), "weight": 1.0}


def _module_file(name: str) -> Path | None:
    """The source file of module ``name`` (dotted), found on ``sys.path`` as an import would find it
    but without running any of it, not even a package's ``__init__``: the checks come before any
    user code runs. Only that file is hashed, not what it imports. None for a built-in, compiled or
    namespace module, or a name that is not there."""
    from importlib.machinery import PathFinder

    parts, search, found = name.split("."), None, None
    for i in range(len(parts)):
        try:
            found = PathFinder.find_spec(".".join(parts[:i + 1]), search)
        except (ImportError, ValueError):
            return None
        if found is None:
            return None
        search = found.submodule_search_locations
    origin = getattr(found, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None


# -- preference model ---------------------------------------------------------------------------

def _pm_reward(path: str, spec: str) -> Reward:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise CAIError(f"--reward {spec}: no such folder; train a preference model with `cai reward -o DIR`")
    # cai reward --lora --keep-adapter writes an adapter folder, which PreferenceModel loads on its base.
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise CAIError(f"--reward {spec}: the folder holds no preference model (no config.json); train one with "
                       f"`cai reward -o DIR`, or give module:function or judge:MODEL")
    try:
        from cai.train.pm import PreferenceModel
    except ImportError as e:
        raise CAIError(f"--reward {spec}: preference-model support (cai.train.pm) is not available here: {e}") from None
    try:
        pm = PreferenceModel.load(str(folder))
    except CAIError:
        raise
    except Exception as e:  # transformers raises many kinds for a folder that is not a PM
        raise CAIError(f"--reward {spec}: the folder holds no preference model that loads ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}); train one with `cai reward -o DIR`") from None
    return Reward(pm.score, spec, {"kind": "pm", "path": str(folder)})


# -- module:function ----------------------------------------------------------------------------

def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _import_callable(spec: str) -> RewardFn:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise CAIError(f"--reward {spec}: write module:function or path/to/file.py:function")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise CAIError(f"--reward {spec}: file {target} not found")
        name = "cai_reward_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise CAIError(f"--reward {spec}: cannot import {target}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module  # dataclasses and pickling look the module up by name
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:
            raise CAIError(f"--reward {spec}: importing {target} failed ({_first_line(e)}); fix the file "
                           "(--traceback shows where)") from e
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise CAIError(f"--reward {spec}: no module named {e.name!r}; check the name and that it is importable "
                           "(on PYTHONPATH), or give path/to/file.py:function") from None
        except Exception as e:
            raise CAIError(f"--reward {spec}: importing {target} failed ({_first_line(e)}); fix the module "
                           "(--traceback shows where)") from e
    fn = getattr(module, attr, None)
    if fn is None:
        raise CAIError(f"--reward {spec}: {target} has no attribute {attr!r}")
    if not callable(fn):
        raise CAIError(f"--reward {spec}: {target}.{attr} is not callable; it must take (prompts, completions) "
                       "and return one number per completion")
    return fn


# -- constitution judge -------------------------------------------------------------------------

class JudgeReward:
    """P(the answer follows the principle), asked of a judge backend with ``score_options``.

    All (answer, principle) questions of one call go to the backend in one batched
    ``score_options`` call.
    """

    def __init__(self, backend: Any, constitution: Any, *, principles: str | int = "all", seed: int = 0,
                 template: dict[str, Any] | None = None) -> None:
        from cai.templates import load_template

        self.backend, self.constitution, self.seed = backend, constitution, seed
        self.tpl = template or load_template("reward")
        self.pool = tuple(p for p in constitution.principles if p.critique or p.preference)
        if not self.pool:
            raise CAIError(f"constitution {constitution.name!r} has no principles to judge by")
        spec = str(principles).strip()
        self.mode, self.n = spec, 0
        if spec.isdigit():
            self.mode, self.n = "n", min(int(spec), len(self.pool))
            if self.n < 1:
                raise CAIError(f"--principles {spec}: N must be at least 1")
        elif spec not in ("all", "sample"):
            ids = [s.strip() for s in spec.split(",") if s.strip()]
            if not ids:
                raise CAIError(f"--principles {spec!r}: give all, sample, N or comma-separated ids")
            self.pool, self.mode = tuple(constitution.principle(i) for i in ids), "all"
        self.yes, self.no = self.tpl["yes_option"], self.tpl["no_option"]
        self.info = {"kind": "judge", "model": getattr(backend, "name", str(backend)),
                     "constitution": {"name": constitution.name, "version": constitution.version,
                                      "hash": constitution.hash},
                     "principles": spec}

    def _choose(self, prompt: Conversation, completion: str) -> tuple[Any, ...]:
        if self.mode == "all":
            return self.pool
        # Seeded by the text, so the same answer is judged by the same principles in any batch.
        key = hashlib.sha256(repr((self.seed, prompt, completion)).encode()).hexdigest()
        rng = random.Random(key)
        weights = [max(p.weight, 0.0) for p in self.pool]
        if self.mode == "sample":
            return (rng.choices(self.pool, weights=weights)[0],)
        # Weighted sampling without replacement (Efraimidis-Spirakis keys u^(1/w)).
        keyed = sorted(self.pool, key=lambda p: -(rng.random() ** (1.0 / p.weight)) if p.weight > 0 else 0.0)
        return tuple(keyed[: self.n])

    def conversation(self, prompt: Conversation, completion: str, principle: Any) -> Conversation:
        from cai.templates import fill

        tpl = self.tpl
        shown = [m for m in prompt if m["role"] != "system"] + [{"role": "assistant", "content": completion}]
        transcript = tpl["turn_separator"].join(
            fill(tpl["turn"], role=tpl["roles"].get(m["role"], m["role"]), content=m["content"].strip()) for m in shown)
        text = fill(tpl["question"], conversation=transcript, principle=(principle.critique or principle.preference).strip())
        conv: Conversation = [{"role": "system", "content": tpl["system"]}] if tpl.get("system") else []
        conv.append({"role": "user", "content": text})
        # A final assistant turn is continued by the backend (cai.types); with no prefix the
        # options are scored as the first words of the judge's own new turn.
        if tpl.get("answer_prefix"):
            conv.append({"role": "assistant", "content": tpl["answer_prefix"]})
        return conv

    def __call__(self, prompts: list[Conversation], completions: list[str]) -> list[float]:
        jobs: list[tuple[int, Conversation]] = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions)):
            for pr in self._choose(prompt, completion):
                jobs.append((i, self.conversation(prompt, completion, pr)))
        scores = self.backend.score_options([c for _, c in jobs], [self.yes, self.no])
        sums, counts = [0.0] * len(completions), [0] * len(completions)
        for (i, _), lp in zip(jobs, scores):
            a, b = lp[self.yes], lp[self.no]
            m = max(a, b)
            sums[i] += math.exp(a - m) / (math.exp(a - m) + math.exp(b - m))
            counts[i] += 1
        return [s / c for s, c in zip(sums, counts)]

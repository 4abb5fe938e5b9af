"""``cai rloo``: RL-CAI without a critic, by TRL's RLOOTrainer (REINFORCE Leave-One-Out).

For each prompt the policy samples k answers; each answer's advantage is its reward minus the mean
reward of the other k - 1 answers (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for
free!"; Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning
from Human Feedback in LLMs"), with a KL penalty (``--kl-coef``) to the starting policy. No value head,
so it is the cheap alternative to ``cai ppo``.

The reward is any callable ``reward(prompts: list[Conversation], completions: list[str]) ->
list[float]``: in Python pass it to :func:`run_rloo`; on the command line ``--reward SPEC`` is
loaded by :func:`cai.train.rewards.load_reward` (a ``cai reward`` PM folder, ``module:function``
or ``judge:MODEL``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence

from cai.config import option, to_dict
from cai.errors import CAIError
from cai.sources import list_builtin_prompt_sets
from cai.train.common import TrainCommon
from cai.types import check_temperature

STAGE = "rloo"
_SHARED_MAX_LENGTH = next(f.default for f in fields(TrainCommon) if f.name == "max_length")
# TRL's log names -> the shared metrics.jsonl names.
RENAME = {"completions/mean_length": "length", "clip_ratio/region_mean": "clip_frac"}


@dataclass
class RlooConfig(TrainCommon):
    policy: str = option("smollm2-135m", help="starting policy (alias, folder or hf:PATH); the KL reference is "
                         "this same model", flags=("-m", "--model"), aliases=("--policy",))
    reward: str | None = option(None, help="reward: a `cai reward` PM folder, module:function, or judge:MODEL "
                                "(loaded by cai.train.rewards.load_reward)")
    prompts: str | None = option(None, help="prompt source: file (.jsonl/.json/.csv/.txt/.parquet), built-in set "
                                 f"({', '.join(list_builtin_prompt_sets())}), hh-rlhf:PATH or hf:DATASET[:SPLIT]",
                                 flags=("--data",), aliases=("--prompts",))
    field: str | None = option(None, help="column holding the prompt in a JSONL/CSV/Parquet source")
    constitution: str = option("default", help="constitution of a judge: reward", flags=("-c", "--constitution"))
    principles: str = option("all", help="judge: reward: 'all' principles (mean), 'sample' (one per answer), N, "
                             "or comma-separated ids")
    limit: int | None = option(None, help="use at most N prompts")
    samples_per_prompt: int = option(4, help="answers sampled per prompt (k >= 2); each is baselined by the mean "
                                     "reward of the other k - 1", flags=("-k", "--samples-per-prompt"))
    max_tokens: int = option(128, help="token limit of each sampled answer")
    temperature: float = option(1.0, help="sampling temperature of the rollouts")
    beta: float = option(0.05, help="KL penalty coefficient against the starting policy (0 skips the reference)",
                         flags=("--kl-coef",), aliases=("--beta",))
    batch_size: int = option(8, help="sampled answers per forward batch, per process; an optimiser step takes "
                             "batch-size x grad-accum of them, k from each prompt")
    # TRL's RLOO bounds the answer (max_tokens) and cuts no prompt, so `cai rloo` shows no --max-length.
    max_length: int = option(1024, help="not used by rloo")

    def __post_init__(self) -> None:
        if self.max_length != _SHARED_MAX_LENGTH:
            raise ValueError("max_length has no effect in rloo (TRL's RLOO cuts no prompt); bound the answers with "
                             "max_tokens and leave max_length out")
        self.check_common()
        if self.samples_per_prompt < 2:
            raise ValueError(f"--samples-per-prompt must be >= 2 (the leave-one-out baseline needs another "
                             f"sample), got {self.samples_per_prompt}")
        if (self.batch_size * self.grad_accum) % self.samples_per_prompt:
            raise ValueError(f"--batch-size x --grad-accum ({self.batch_size * self.grad_accum}) must be a multiple of "
                             f"--samples-per-prompt ({self.samples_per_prompt}): a batch holds whole groups")
        check_temperature(self.temperature)
        if self.max_tokens < 1 or self.temperature <= 0 or self.beta < 0:
            raise ValueError("--max-tokens must be >= 1, --temperature > 0 and --kl-coef >= 0")


def trl_reward(reward: Callable[..., Sequence[float]]) -> Callable[..., list[float]]:
    """Adapt a cai reward (Conversation prompts, string answers) to TRL's reward-function call."""

    def cai_reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        convs = [p if isinstance(p, list) else [{"role": "user", "content": str(p)}] for p in prompts]
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        return [float(x) for x in reward(convs, texts)]

    # TRL logs each reward by its __name__; a cai.train.rewards.Reward carries its spec as .name.
    cai_reward.__name__ = str(getattr(reward, "__name__", None) or getattr(reward, "name", None) or type(reward).__name__)
    return cai_reward


def _prompts(config: RlooConfig, prompts: Sequence[Any] | None) -> list[list[dict[str, str]]]:
    from cai.critique.plan import prompt_items

    if prompts is None:
        from cai.sources import load_prompts

        prompts = load_prompts(config.prompts, field=config.field, limit=config.limit)
    return [item.messages for item in prompt_items(prompts)]


def _trainer_args(config: RlooConfig, run_dir: Any, show_progress: bool | None):
    from trl import RLOOConfig

    from cai.train.model_io import trainer_args

    kw = trainer_args(config, run_dir, show_progress=show_progress)
    kw.pop("max_length")  # RLOO bounds the answer instead (max_completion_length)
    return RLOOConfig(**kw, num_generations=config.samples_per_prompt, max_completion_length=config.max_tokens,
                      temperature=config.temperature, beta=config.beta, log_completions=False)


def run_rloo(config: RlooConfig, *, reward: Callable[..., Sequence[float]] | None = None,
             prompts: Sequence[Any] | None = None, show_progress: bool | None = None) -> dict[str, Any]:
    """Train (or resume) the policy into ``config.output``; returns the run record (``cai_run.json``).

    ``reward`` is any ``reward(prompts, completions) -> list[float]``; without it ``config.reward``
    is loaded with :func:`cai.train.rewards.load_reward`. ``prompts`` overrides ``config.prompts``.
    """
    from cai.train.model_io import model_path
    from cai.outputs import inputs_of
    from cai.train.rundir import RunDir, finished_note

    config.check_output_and_data([prompts] if prompts is not None else [config.prompts] if config.prompts else [],
                                 "no prompts; pass --data SRC (the prompts the policy answers during RL)")
    if reward is None and not config.reward:
        raise CAIError("--reward is required: a `cai reward` PM folder, module:function or judge:MODEL")
    conversations = _prompts(config, prompts)
    # TRL's sampler keeps only whole batches of distinct prompts: with fewer, it trains 0 steps and
    # the untrained policy is saved as if it were done.
    need = config.batch_size * config.grad_accum // config.samples_per_prompt
    if len(conversations) < need:
        raise CAIError(f"{len(conversations)} prompts, but one batch needs {need} (--batch-size {config.batch_size} "
                       f"x --grad-accum {config.grad_accum} answers / --samples-per-prompt "
                       f"{config.samples_per_prompt} per prompt); add prompts or lower --batch-size")
    digest = hashlib.sha256(json.dumps(conversations, sort_keys=True).encode()).hexdigest()
    data = [{"path": config.prompts or "(python)", "sha256": digest, "weight": 1.0, "records": len(conversations)}]
    from cai.train.rewards import reward_fingerprint

    if fingerprint := reward_fingerprint(reward if reward is not None else config.reward):
        data.append(fingerprint)
    base = model_path(config.policy)
    run = RunDir(config.output, command=STAGE, config=to_dict(config), data=data, base_model=base,
                 overwrite=config.overwrite, inputs=inputs_of(config))
    state = run.check()
    if state == "done":
        print(finished_note(config.output), file=sys.stderr)
        return run.existing() or {}
    from cai.progress import library_bars

    with library_bars(show_progress):
        if reward is None:
            from cai.train.rewards import load_reward

            reward = load_reward(config.reward, constitution=config.constitution, principles=config.principles,
                                 seed=config.seed)
        return _train(config, run, base, conversations, reward,
                      run.last_checkpoint() if state == "resume" else None, show_progress)


def _train(config, run, base, conversations, reward, checkpoint, show_progress) -> dict[str, Any]:
    from trl import RLOOTrainer

    from cai.backends.hf_sampling import fast_multinomial
    from cai.train.guards import train_guarded
    from cai.train.saving import saving
    from cai.train.model_io import final_metrics, load_tokenizer, lora_config, save_final, shared_dataset

    tokenizer = load_tokenizer(base)
    args = _trainer_args(config, run, show_progress)
    run.start(checkpoint)
    trainer = RLOOTrainer(
        model=base, reward_funcs=trl_reward(reward), args=args, processing_class=tokenizer,
        train_dataset=shared_dataset([{"prompt": c} for c in conversations], args, run),
        peft_config=lora_config(config), callbacks=[run.callback(RENAME)])
    # A NaN/inf loss or weight stops at its step with a one-line error; no final model is saved.
    # TRL samples with transformers' generate (unless vLLM): its torch.multinomial draws by inverse CDF
    # on a CPU (cai.backends.hf_sampling; 1.64x the hf backend's tokens/s in bench/sampling.py).
    with saving(run), fast_multinomial():  # a checkpoint or the model that cannot be written is one line too
        result = train_guarded(trainer, checkpoint, run.checkpoints)
    with saving(run, model_files=True):
        save_final(trainer, config, run.path, base)
    metrics = final_metrics(result, trainer)
    metrics["prompts"] = len(conversations)
    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines() if '"reward"' in x] \
        if (run.path / "metrics.jsonl").is_file() else []
    if rows:
        metrics.update(reward_first=rows[0]["reward"], reward_last=rows[-1]["reward"], kl_last=rows[-1].get("kl"))
    run.record["reward"] = config.reward or getattr(reward, "__name__", "callable")
    run.finish(metrics)
    return run.record

"""``cai ppo``: the RL phase of RL-CAI, our own PPO with KL control (TRL no longer ships one).

One PPO step:

1. **rollout**: the current policy answers a batch of prompts (HF ``generate``, sampled);
2. **score**: the reward (a PM folder, ``module:function`` or ``judge:MODEL``) scores each answer;
   answers cut off without an end-of-turn token lose ``missing_eos_penalty``;
3. **advantages**: the policy's, the reference's and the value head's views of the rollout give
   per-token rewards (score at the last token, -beta*KL at every token), GAE and whitening;
4. **update**: ``ppo_epochs`` passes of minibatches over the rollout with the clipped policy loss,
   the clipped value loss and, for PPO-ptx, alpha * L_SL on SL-CAI data;
5. **log and checkpoint**: metrics.jsonl / TensorBoard each step, a checkpoint every
   ``save_steps``; beta follows the KL target when one is set.

The formulas are in :mod:`cai.train.ppo_math`; the models in :mod:`cai.train.ppo_model`.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai.config import option, to_dict
from cai.errors import CAIError
from cai.sources import list_builtin_prompt_sets
from cai.train.common import TrainCommon
from cai.train.ppo_guards import check_horizon, warn_drift
from cai.types import check_temperature, keyed_seed


@dataclass
class PPORunConfig(TrainCommon):
    policy: str | None = option(None, help="the policy to train: an SL-CAI model folder (cai sft -o DIR), hf:DIR "
                                "or an alias such as smollm2-135m; also the frozen reference", flags=("-m", "--model"),
                                aliases=("--policy",))
    reward: str | None = option(None, help="the reward: a preference-model folder (cai reward -o DIR), "
                                "module:function, path/to/file.py:function, or judge:MODEL (a constitution judge, -c)")
    prompts: str | None = option(None, help="prompt source: file (.jsonl/.json/.csv/.txt/.parquet), built-in set "
                                 f"({', '.join(list_builtin_prompt_sets())}), hh-rlhf:PATH or hf:DATASET[:SPLIT]",
                                 flags=("--data",), aliases=("--prompts",))
    field: str | None = option(None, help="column holding the prompt text in a JSONL/CSV/Parquet source")
    limit: int | None = option(None, help="use at most N prompts")
    batch_size: int = option(8, help="prompts per PPO step, one sampled answer (rollout) each, per process")
    max_length: int = option(1024, help="token limit of prompt + answer: a prompt keeps its last max-length - "
                             "max-tokens tokens")
    constitution: str = option("default", help="constitution of a judge: reward", flags=("-c", "--constitution"))
    principles: str = option("all", help="judge: reward: 'all' principles (mean), 'sample' (one per answer), N, "
                             "or comma-separated ids")
    max_tokens: int = option(128, help="token limit of each answer; longer answers are cut off (and penalised, "
                             "see --missing-eos-penalty)")
    temperature: float = option(1.0, help="sampling temperature of rollouts (1.0: the policy's own distribution)")
    top_p: float = option(1.0, help="nucleus sampling top-p of rollouts")
    ppo_epochs: int = option(4, help="optimisation passes over each batch of rollouts")
    minibatch_size: int | None = option(None, help="rollouts per gradient step within a PPO epoch (default: "
                                        "batch-size / 4, at least 1)")
    clip_range: float = option(0.2, help="PPO's epsilon: how far the probability ratio may move per update")
    clip_range_value: float = option(0.2, help="how far a value estimate may move per update (clipped value loss)")
    vf_coef: float = option(0.1, help="weight of the value loss")
    entropy_coef: float = option(0.0, help="weight of an entropy bonus (0: none)")
    gamma: float = option(1.0, help="discount of GAE")
    lam: float = option(0.95, help="lambda of GAE: 1 is Monte-Carlo returns, 0 is one-step TD")
    kl_coef: float = option(0.05, help="beta: weight of the per-token KL penalty to the reference (the start "
                            "value when --kl-target is set)")
    kl_target: float | None = option(None, help="adapt beta so the KL per answer (nats) tracks this target "
                                     "(Ziegler et al. 2019); unset: beta stays fixed")
    kl_horizon: float = option(10000.0, help="horizon of the adaptive KL controller, in rollouts: larger is slower")
    kl_estimator: str = option("k1", help="per-token KL estimate in the penalty: k1 (log p/q) or k3 "
                               "((r-1) - log r, never negative)")
    kl_warn: float | None = option(None, help="warn when the KL per answer exceeds this (default: twice "
                                   "--kl-target, or 20 nats with a fixed beta)")
    whiten_advantages: bool = option(True, help="normalise advantages to mean 0, variance 1 per batch")
    missing_eos_penalty: float = option(1.0, help="subtracted from the score of an answer cut off at --max-tokens "
                                        "without an end-of-turn token (0: no penalty)")
    reward_clip: float | None = option(None, help="clip scores into [-C, C] (after normalisation)")
    reward_norm: bool = option(False, help="normalise scores by their running mean and standard deviation")
    max_grad_norm: float = option(1.0, help="clip the gradient norm to this")
    ptx_data: str | None = option(None, help="PPO-ptx: SL-CAI data (cai critique records or any SFT JSONL) whose "
                                  "final answers' NLL is added to each update")
    ptx_coef: float = option(0.0, help="PPO-ptx: alpha in L = L_PPO + alpha * L_SL (needs --ptx-data)")
    old_logprobs: str = option("rollout", help="where the sampling policy's log-probs, values and entropy come "
                               "from: rollout (the logits and hidden states generation computed anyway; no extra "
                               "pass) or forward (a separate no-grad pass over the finished answers)")
    device: str = option("auto", help="cpu, cuda, cuda:N or auto")
    bf16: bool | None = option(None, help="policy weights in bf16 (default: on a GPU that supports it; on a CPU "
                               "only with --lora, where a bf16 matmul runs over 1.1x the fp32 rate (AMX), timed "
                               "once per machine and kept in $CAI_HOME/cpu_matmul.json; the LoRA adapters, the "
                               "value head and the LM head's log-probs stay fp32)")

    def __post_init__(self) -> None:
        self.check_common()
        if self.max_tokens < 1:
            raise ValueError(f"max-tokens must be >= 1, got {self.max_tokens}")
        if self.max_tokens >= self.max_length:
            raise ValueError(f"max-tokens ({self.max_tokens}) must be below max-length ({self.max_length}), which "
                             "holds prompt and answer")
        for name in ("ppo_epochs",):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1")
        if self.minibatch_size is not None and not 1 <= self.minibatch_size <= self.batch_size:
            raise ValueError(f"minibatch-size must be within 1..batch-size ({self.batch_size})")
        if self.old_logprobs not in ("rollout", "forward"):
            raise ValueError(f"old-logprobs must be rollout or forward, got {self.old_logprobs!r}")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl-estimator must be k1 or k3, got {self.kl_estimator!r}")
        if self.kl_target is not None and self.kl_target <= 0:
            raise ValueError("kl-target must be > 0 (leave it out for a fixed beta)")
        if self.kl_coef < 0 or not 0 <= self.lam <= 1 or not 0 <= self.gamma <= 1:
            raise ValueError("kl-coef must be >= 0, lam and gamma within [0, 1]")
        if self.ptx_coef and not self.ptx_data:
            raise ValueError("--ptx-coef needs --ptx-data FILE")
        if self.ptx_data and not self.ptx_coef > 0:  # alpha 0 never read the file: plain PPO, silently
            raise ValueError("--ptx-data needs --ptx-coef ALPHA above 0 (e.g. 0.5); without it the file is unused")
        if not 0 < self.top_p <= 1:  # generate() took 0 and 2 without a word
            raise ValueError(f"top-p must be in (0, 1], got {self.top_p}")
        check_temperature(self.temperature)

    @property
    def minibatch(self) -> int:
        return self.minibatch_size or max(1, self.batch_size // 4)


def run_ppo(config: PPORunConfig, *, reward: Any = None, show_progress: bool | None = None) -> dict[str, Any]:
    """Train; returns a summary (output folder, steps, final metrics). ``reward`` (a callable)
    overrides ``config.reward``."""
    from cai.progress import library_bars

    with library_bars(show_progress):  # the bars of loading and saving weights follow --progress too
        return _run_ppo(config, reward=reward, show_progress=show_progress)


def _run_ppo(config: PPORunConfig, *, reward: Any, show_progress: bool | None) -> dict[str, Any]:
    import torch

    from cai.progress import progress
    from cai.sources import load_prompts
    from cai.train import ppo_data as data
    from cai.train.guards import NonFiniteGuard
    from cai.train.data import sha256_file
    from cai.train.ppo_log import Checkpoints, TensorBoard, json_sha256
    from cai.outputs import inputs_of
    from cai.train.rundir import RunDir, finished_note
    from cai.train.saving import saving
    from cai.train.ppo_math import RunningMoments, kl_controller
    from cai.train.ppo_model import build_policy, resolve_model_path
    from cai.train.ppo_rollout import rollout
    from cai.train.rewards import load_reward, reward_fingerprint

    cfg = config
    cfg.check_output_and_data([cfg.prompts] if cfg.prompts else [],
                              f"no prompts; pass --data SRC (a file, {', '.join(list_builtin_prompt_sets())}, "
                              "hh-rlhf:PATH)")
    if not cfg.policy:
        raise CAIError("cai ppo: give the policy with -m DIR (an SL-CAI model, or smollm2-135m)")
    if reward is None and not cfg.reward:
        raise CAIError("cai ppo: give the reward with --reward DIR|module:function|judge:MODEL")
    # Everything that can be wrong with the input is checked before a model loads.
    prompts = load_prompts(cfg.prompts, field=cfg.field, limit=cfg.limit)
    policy_path = resolve_model_path(cfg.policy)
    data_hashes = [{"role": "prompts", "path": cfg.prompts, "weight": 1.0,
                    "sha256": json_sha256([[p.id, p.messages] for p in prompts])}]
    if cfg.ptx_data:
        if not Path(cfg.ptx_data).is_file():
            raise CAIError(f"--ptx-data {cfg.ptx_data}: no such file")
        data_hashes.append({"role": "ptx", "path": cfg.ptx_data, "weight": cfg.ptx_coef,
                            "sha256": sha256_file(Path(cfg.ptx_data))})
    if fingerprint := reward_fingerprint(reward if reward is not None else cfg.reward):
        data_hashes.append(fingerprint)
    run = RunDir(cfg.output, command="ppo", config=to_dict(cfg), data=data_hashes, base_model=policy_path,
                 overwrite=cfg.overwrite, inputs=inputs_of(cfg))
    state = run.check()
    if state == "done":
        # Like every trainer: a finished run is not touched (no model reload, no re-save, no new end time).
        print(finished_note(cfg.output), file=sys.stderr)
        old = run.existing() or {}
        return {"output": str(run.path), "steps": total_steps(cfg, len(prompts)), "resumed_from": None,
                "already_done": True, "final": old.get("final_metrics", {}), "curves": old.get("curves", [])}
    reward_fn = load_reward(reward if reward is not None else cfg.reward, constitution=cfg.constitution,
                            principles=cfg.principles, seed=cfg.seed)
    checkpoints = Checkpoints(run.path)

    torch.manual_seed(cfg.seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    tok, model, opt = build_policy(cfg, policy_path, device)
    ctl = kl_controller(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    moments = RunningMoments()
    ptx = data.load_ptx(cfg.ptx_data, tok, cfg.max_length) if cfg.ptx_data and cfg.ptx_coef else None
    total = total_steps(cfg, len(prompts))
    check_horizon(ctl, cfg, total)

    step0 = 0
    ckpt = checkpoints.latest() if state != "new" else None
    if ckpt is not None:
        step0 = _load_checkpoint(ckpt, model, opt, ctl, moments)
        print(f"cai ppo: resuming {cfg.output} from step {step0} ({ckpt})", file=sys.stderr)
    run.start(str(ckpt) if ckpt is not None else None)  # also drops metrics logged after the checkpoint
    run.record["reward_info"] = reward_fn.info
    tb = TensorBoard(run.path, step0)
    eos_ids = _eos_ids(tok, model.model)
    first: dict[str, float] = {}
    warned: set[str] = set()
    last: dict[str, Any] = {}
    guard = NonFiniteGuard()
    bar = progress(total, "ppo", unit="step", initial=step0, enabled=show_progress)
    try:
        for step in range(step0 + 1, total + 1):
            batch = [prompts[i] for i in data.batch_indices(len(prompts), cfg.batch_size, step, cfg.seed)]
            t0 = time.perf_counter()
            roll = rollout(model, tok, [p.messages for p in batch], cfg, eos_ids, seed=keyed_seed(cfg.seed, step, "gen"))
            t1 = time.perf_counter()
            raw = torch.tensor(reward_fn([p.messages for p in batch], roll["texts"]), dtype=torch.float32)
            t2 = time.perf_counter()
            stats = _update(model, opt, ctl, moments, roll, raw.to(device), cfg, step, ptx, tok)
            t3 = time.perf_counter()
            rec = {"step": step, "epoch": step * cfg.batch_size / len(prompts), "reward": raw.mean().item(),
                   "reward_std": raw.std(unbiased=False).item(), **stats,
                   "length": roll["mask"].sum(-1).float().mean().item(),
                   "truncated": roll["truncated"].float().mean().item(), "lr": cfg.lr,
                   "time_rollout": t1 - t0, "time_score": t2 - t1, "time_update": t3 - t2}
            if guard.check(step, rec):
                # The update just made the weights bad: stop before they are logged or checkpointed.
                raise CAIError(guard.message(checkpoints.folder))
            if step % cfg.logging_steps == 0 or step == total:
                run.log(step, {k: v for k, v in rec.items() if k != "step"})
                tb.log(rec)
            warn_drift(rec, cfg, first, warned)
            last = rec
            if step % cfg.save_steps == 0 or step == total:
                with saving(run, checkpoint=checkpoints.clean_latest):  # a full disk: one line, step-N kept
                    _save_checkpoint(checkpoints, step, model, opt, ctl, moments)
            bar.update(1)
            bar.set_postfix(reward=f"{rec['reward']:.3f}", kl=f"{rec['kl']:.2f}")
    finally:
        bar.close()
        tb.close()
    with saving(run, checkpoint=checkpoints.clean_latest, model_files=True):
        model.save_final(run.path, tok, keep_adapter=cfg.keep_adapter)
    final = last or _last_logged(run.path)
    final = {k: v for k, v in final.items() if isinstance(v, (int, float))}
    run.finish(final)  # draws DIR/curves/*.png from metrics.jsonl
    return {"output": str(run.path), "steps": total, "resumed_from": step0, "final": final,
            "curves": run.record.get("curves", [])}


def total_steps(cfg: PPORunConfig, n_prompts: int) -> int:
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * n_prompts / cfg.batch_size))


def _last_logged(out: Path) -> dict[str, Any]:
    """The last metrics line, for a run killed after its last checkpoint but before it finished: the
    resume then trains no step of its own. (A finished run returns before this, in :func:`run_ppo`.)"""
    import json

    lines = [ln for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()] \
        if (out / "metrics.jsonl").is_file() else []
    return json.loads(lines[-1]) if lines else {}


def _eos_ids(tok: Any, model: Any) -> list[int]:
    ids = {tok.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None)
    ids.update(extra if isinstance(extra, (list, tuple)) else [extra])
    return sorted(i for i in ids if i is not None)


def _logprobs(logits: Any, tokens: Any, temperature: float) -> Any:
    import torch

    logits = logits.float()
    if temperature > 0 and temperature != 1.0:  # not at 1: a copy of [rows, vocab] fp32, forward and backward
        logits = logits / temperature
    return torch.gather(torch.log_softmax(logits, -1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def _update(model: Any, opt: Any, ctl: Any, moments: Any, roll: dict, raw: Any, cfg: PPORunConfig, step: int,
            ptx: Any, tok: Any) -> dict[str, float]:
    import torch

    from cai.train import ppo_math as pm
    from cai.train.ppo_data import ptx_batch, trim_columns, widen

    ids, attn, mask, start = roll["ids"], roll["attn"], roll["mask"], roll["prompt_width"]
    resp = ids[:, start:]
    B, mb = ids.shape[0], cfg.minibatch
    from_rollout = "old_logp" in roll
    old_logp, ref_logp, old_values, ent = [], [], [], []
    with torch.no_grad():
        for i in range(0, B, mb):
            sl = slice(i, i + mb)
            sub_ids, sub_attn, sub_start, n = trim_columns(ids[sl], attn[sl], start)
            if not from_rollout:
                logits, values = model.forward(sub_ids, sub_attn, sub_start)
                old_logp.append(widen(_logprobs(logits, resp[sl, :n], cfg.temperature), resp.shape[1]))
                ent.append(widen(pm.entropy_from_logits(logits / (cfg.temperature or 1.0)), resp.shape[1]))
                old_values.append(widen(values, resp.shape[1]))
            ref = model.ref_logits(sub_ids, sub_attn, sub_start)
            ref_logp.append(widen(_logprobs(ref, resp[sl, :n], cfg.temperature), resp.shape[1]))
    ref_logp = torch.cat(ref_logp)
    if from_rollout:
        old_logp, old_values, ent = roll["old_logp"], roll["old_values"], roll["entropy"]
    else:
        old_logp, old_values, ent = torch.cat(old_logp), torch.cat(old_values), torch.cat(ent)
    entropy = pm.masked_mean(ent, mask).item()

    # Scores -> normalise -> clip -> truncation penalty (in the units PPO sees).
    scores = raw.clone()
    if cfg.reward_norm:
        moments.update(raw.cpu())
        scores = (scores - moments.mean) / moments.std
    if cfg.reward_clip is not None:
        scores = scores.clamp(-cfg.reward_clip, cfg.reward_clip)
    if cfg.missing_eos_penalty:
        scores = scores - cfg.missing_eos_penalty * roll["truncated"].to(scores.device).float()
    beta = ctl.value
    rewards, kl_tok = pm.kl_penalized_rewards(scores, old_logp, ref_logp, mask, beta, cfg.kl_estimator)
    kl = kl_tok.sum(-1).mean().item()
    adv, returns = pm.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        adv = pm.whiten(adv, mask)

    sums: dict[str, float] = {}
    n_updates = 0
    gen = torch.Generator().manual_seed(keyed_seed(cfg.seed, step, "minibatch"))
    updates_per_step = cfg.ppo_epochs * math.ceil(B / mb)
    for _ in range(cfg.ppo_epochs):
        perm = torch.randperm(B, generator=gen).to(ids.device)
        for i in range(0, B, mb):
            idx = perm[i:i + mb]
            opt.zero_grad(set_to_none=True)
            micro = [idx[j::cfg.grad_accum] for j in range(min(cfg.grad_accum, len(idx)))]
            part: dict[str, float] = {}
            for j, m_idx in enumerate(micro):
                w = len(m_idx) / len(idx)
                sub_ids, sub_attn, sub_start, n = trim_columns(ids[m_idx], attn[m_idx], start)
                logits, values = model.forward(sub_ids, sub_attn, sub_start)
                logp = _logprobs(logits, resp[m_idx, :n], cfg.temperature)
                m = mask[m_idx, :n]  # the columns trimmed away are padding in every one of these rows
                pg, clip_frac, approx_kl = pm.policy_loss(logp, old_logp[m_idx, :n], adv[m_idx, :n], m,
                                                          cfg.clip_range)
                vl, vclip = pm.value_loss(values, old_values[m_idx, :n], returns[m_idx, :n], m,
                                          cfg.clip_range_value)
                loss = pg + cfg.vf_coef * vl
                if cfg.entropy_coef:
                    loss = loss - cfg.entropy_coef * pm.masked_mean(pm.entropy_from_logits(logits), m)
                got = {"policy_loss": pg.item(), "value_loss": vl.item(), "clip_frac": clip_frac.item(),
                       "value_clip_frac": vclip.item(), "approx_kl": approx_kl.item()}
                if ptx is not None:
                    # PPO-ptx, Ouyang et al. 2022 eq. (2): + gamma * E_pretrain[log pi(x)]; here the
                    # SL-CAI answers' NLL, alpha * L_SL as the CAI tutorial writes it.
                    cursor = ((step - 1) * updates_per_step + n_updates) * cfg.grad_accum + j
                    p_ids, p_attn, p_lab = (t.to(ids.device) for t in ptx_batch(ptx, len(m_idx), cursor, cfg.seed,
                                                                                 tok.pad_token_id))
                    with model.compute():
                        l_sl = model.model(input_ids=p_ids, attention_mask=p_attn, labels=p_lab, use_cache=False).loss
                    loss = loss + cfg.ptx_coef * l_sl
                    got["ptx_loss"] = l_sl.item()
                (loss * w).backward()
                for k, v in got.items():
                    part[k] = part.get(k, 0.0) + v * w
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            part["grad_norm"] = float(grad_norm)
            for k, v in part.items():
                sums[k] = sums.get(k, 0.0) + v
            n_updates += 1
    ctl.update(kl, B)
    stats = {k: v / n_updates for k, v in sums.items()}
    return {"kl": kl, "kl_coef": beta, "entropy": entropy, "score": scores.mean().item(), **stats}


def _save_checkpoint(checkpoints: Any, step: int, model: Any, opt: Any, ctl: Any, moments: Any) -> None:
    import json

    import torch

    tmp = checkpoints.new(step)
    model.save_checkpoint_weights(tmp)
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
    state = {"step": step, "kl_controller": ctl.state_dict(), "reward_moments": moments.state_dict()}
    (tmp / "state.json").write_text(json.dumps(state, indent=2))  # written last: marks the checkpoint complete
    checkpoints.commit(tmp, step)
    from cai.store import checkpoint_fault

    checkpoint_fault(step)  # tests/faults.py: kill -9 once this checkpoint is complete


def _load_checkpoint(folder: Path, model: Any, opt: Any, ctl: Any, moments: Any) -> int:
    import json

    import torch

    state = json.loads((folder / "state.json").read_text())
    model.load_checkpoint_weights(folder)
    opt.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    torch.set_rng_state(torch.load(folder / "rng.pt", weights_only=True)["torch"])
    ctl.load_state_dict(state["kl_controller"])
    moments.load_state_dict(state["reward_moments"])
    return int(state["step"])

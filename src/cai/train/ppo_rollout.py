"""Step 1 of a PPO step (:mod:`cai.train.ppo`): the current policy samples answers with HF
``generate``, and, unless ``--old-logprobs forward``, the same call's logits and hidden states give
the sampling policy's log-probs, entropy and values, so the update needs no pass of its own for them."""

from __future__ import annotations

from typing import Any


def rollout(model: Any, tok: Any, convs: list, cfg: Any, eos_ids: list[int], *, seed: int) -> dict[str, Any]:
    """Sample answers; returns ids (prompt left-padded + answer right-padded), masks and texts."""
    import torch

    from cai.train.ppo_data import encode_prompts, left_pad

    device = model.value_head.weight.device
    enc = encode_prompts(tok, convs, cfg.max_length - cfg.max_tokens)
    p_ids, p_mask = left_pad(enc, tok.pad_token_id)
    p_ids, p_mask = p_ids.to(device), p_mask.to(device)
    torch.manual_seed(seed)
    sample = cfg.temperature > 0
    gen_kw = dict(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0) if sample else \
        dict(do_sample=False)
    keep = cfg.old_logprobs == "rollout"
    from cai.backends.hf_sampling import fast_multinomial

    with torch.no_grad(), model.sampling(rows=p_ids.shape[0]), model.compute(), fast_multinomial():
        out = model.model.generate(input_ids=p_ids, attention_mask=p_mask, max_new_tokens=cfg.max_tokens,
                                   eos_token_id=eos_ids, pad_token_id=tok.pad_token_id, return_dict_in_generate=True,
                                   output_logits=keep, output_hidden_states=keep, **gen_kw)
    resp = out.sequences[:, p_ids.shape[1]:]
    is_eos = torch.isin(resp, torch.tensor(eos_ids, device=device))
    # Answer tokens: up to and including the first end-of-turn token.
    after = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    mask = (~after).long()
    truncated = ~is_eos.any(-1)
    width = max(int(mask.sum(-1).max().item()), 1)
    resp, mask = resp[:, :width].masked_fill(mask[:, :width] == 0, tok.pad_token_id), mask[:, :width]
    texts = [tok.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(resp, mask)]
    roll = {"prompt_width": p_ids.shape[1], "ids": torch.cat([p_ids, resp], 1),
            "attn": torch.cat([p_mask, mask], 1), "mask": mask.float(), "truncated": truncated.cpu(), "texts": texts}
    if keep:
        roll.update(sampling_views(model, out, resp, width, cfg.temperature))
    return roll


def sampling_views(model: Any, out: Any, resp: Any, width: int, temperature: float) -> dict[str, Any]:
    """The old policy's log-probs, entropy and values of the answer tokens, from what ``generate``
    computed while sampling them: step t's logits predict token t, and the last layer's state at
    the position before token t is what the value head reads in :meth:`PolicyWithValue.forward`.
    The same numbers as a separate no-grad pass (up to float rounding: generation reads a KV cache),
    for none of its cost; ``tests/test_ppo.py`` holds them to that."""
    import torch

    from cai.train.ppo_math import entropy_from_logits

    logp, ent = [], []
    for t in range(width):  # one step at a time: a [batch, vocab] tensor, never [batch, answer, vocab] in fp32
        step_logits = out.logits[t].float() / (temperature if temperature > 0 else 1.0)
        logp.append(torch.log_softmax(step_logits, -1).gather(1, resp[:, t:t + 1]).squeeze(1))
        ent.append(entropy_from_logits(step_logits))
    # hidden_states[t]: one tuple per generation step, its last entry the final (normed) layer.
    hidden = torch.stack([out.hidden_states[t][-1][:, -1] for t in range(width)], 1)
    with torch.no_grad():  # the old values are targets, as in the separate pass
        values = model.value_head(hidden.float()).squeeze(-1)
    return {"old_logp": torch.stack(logp, 1), "entropy": torch.stack(ent, 1), "old_values": values}

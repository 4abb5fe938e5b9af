"""The KV connector that lets the samples of a prompt copy its last, partial block
(:mod:`cai.backends.vllm_siblings`): its scheduler side on stand-in requests. A real engine's samples
against the same prompt computed alone: tests/test_backend_vllm.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

from vllm.v1.request import RequestStatus  # noqa: E402

from cai.backends.vllm_siblings import SiblingBlocks, TailCopies  # noqa: E402

BLOCK = 4
PROMPT = list(range(100, 110))  # 10 tokens: two full blocks of 4, then a tail of two


def connector(groups: int = 1) -> SiblingBlocks:
    config = SimpleNamespace(kv_transfer_config=object(), cache_config=SimpleNamespace(block_size=BLOCK))
    return SiblingBlocks(config, None, SimpleNamespace(kv_cache_groups=[object()] * groups, num_blocks=64))


def request(rid: str, prompt=PROMPT, **kw) -> SimpleNamespace:
    fields = dict(request_id=rid, prompt_token_ids=list(prompt), num_output_tokens=0, num_preemptions=0,
                  status=RequestStatus.RUNNING, sampling_params=SimpleNamespace(prompt_logprobs=None))
    return SimpleNamespace(**{**fields, **kw})


def blocks(*ids: int) -> SimpleNamespace:
    return SimpleNamespace(get_block_ids=lambda: (list(ids),))


def scheduled_first(c: SiblingBlocks, first=None) -> SimpleNamespace:
    """The first sample: nothing to copy, so it computes its prompt and becomes the owner."""
    first = first or request("a")
    assert c.get_num_new_matched_tokens(first, 0) == (0, False)
    c.update_state_after_alloc(first, blocks(1, 2, 3), 0)
    return first


def test_a_later_sample_waits_for_the_first_then_copies_the_tail_and_computes_one_token():
    c = connector()
    first = scheduled_first(c)
    later = request("b")
    # The prefix cache gave it the two full blocks; the first sample's prompt has not run yet.
    assert c.get_num_new_matched_tokens(later, 8) == (None, False)
    first.num_output_tokens = 1
    assert c.get_num_new_matched_tokens(later, 8) == (1, False)  # tokens 8 of 0..9: all but the last
    c.update_state_after_alloc(later, blocks(1, 2, 7), 1)
    assert c.build_connector_meta(None) == TailCopies([(3, 7)])  # the owner's tail block into its own
    assert c.build_connector_meta(None) == TailCopies([])
    assert c.copied_tokens == 1


def test_a_longer_tail_is_copied_whole_up_to_the_last_prompt_token():
    c = connector()
    prompt = list(range(11))  # tail: tokens 8, 9, 10; the last is computed
    first = scheduled_first(c, request("a", prompt))
    first.num_output_tokens = 3
    assert c.get_num_new_matched_tokens(request("b", prompt), 8) == (2, False)


@pytest.mark.parametrize("case", ["another prompt", "no full-block hit", "tail is the last token", "preempted",
                                  "already answering", "prompt log-probs", "hybrid model"])
def test_nothing_is_copied_when_there_is_nothing_to_copy(case):
    c = connector(groups=2 if case == "hybrid model" else 1)
    first = scheduled_first(c)
    first.num_output_tokens = 1
    later, computed = request("b"), 8
    if case == "another prompt":
        later = request("b", PROMPT[:-1] + [7])
    elif case == "no full-block hit":
        computed = 4
    elif case == "tail is the last token":
        prompt = PROMPT[:9]
        first = scheduled_first(c, request("c", prompt))
        first.num_output_tokens = 1
        later = request("b", prompt)
    elif case == "preempted":
        later.num_preemptions = 1
    elif case == "already answering":
        later.num_output_tokens = 2
    elif case == "prompt log-probs":  # option scoring: vLLM returns them only for tokens it computes
        later.sampling_params.prompt_logprobs = 0
    assert c.get_num_new_matched_tokens(later, computed) == (0, False)


def test_an_owner_that_finished_or_was_preempted_is_forgotten():
    c = connector()
    first = scheduled_first(c)
    first.num_output_tokens = 1
    c.request_finished_all_groups(first, ([1, 2, 3],))
    assert c.get_num_new_matched_tokens(request("b"), 8) == (0, False)
    second = scheduled_first(c, request("c"))  # a new owner for the same prompt
    second.num_output_tokens = 1
    second.status = RequestStatus.PREEMPTED
    assert c.get_num_new_matched_tokens(request("b"), 8) == (0, False)
    assert c.owners == {}

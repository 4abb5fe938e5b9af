"""The K samples of a prompt share all of its KV cache, its last, partial block included.

vLLM runs ``n = K`` as K requests with the same prompt. Its prefix cache shares only full KV
blocks, so each sample after the first computed the prompt's tail past its last full block again:
on a CPU, with blocks of 32 tokens, about 17 tokens a sample, and for best of 8 on ``cai
critique``'s revision requests 7,513 prompt tokens on top of best of 1's 27,647 (bench/RESULTS.md).
vLLM 0.32 can hit inside a block only for hybrid models with more than one KV cache group.

:class:`SiblingBlocks` is a vLLM V1 KV connector (the interface vLLM offers for KV that comes from
somewhere other than the request's own forward pass) that copies that tail instead. Its scheduler
side finds, for a new request, a running request with the same prompt tokens whose prompt has been
computed (its *owner*) and reports the tail as already computed; the owner's tail block is then
copied into the new request's tail block before the step's forward pass, and the new request
computes only its last prompt token, for the logits it samples from. A request whose owner's prompt
is still to be computed (the K samples arrive together) waits one step. Anything else (a preempted
request, one that asks for its prompt's log-probs, an owner that has finished, a model with more
than one KV cache group) computes its tail as vLLM would have.

On the AVX2 VM best of 8 took 0.94-0.96x the time on those revision requests and 0.86x on short
prompts, the copy switched on and off within one process (bench/RESULTS.md, "Best of 8 with the
later samples copying the prompt's last block").

The copy is exact: the tail block holds, for positions up to the last prompt token, the keys and
values of the same tokens at the same positions; positions past them belong to the owner's answer
and are written over by the new request's own before its attention reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (KVConnectorBase_V1, KVConnectorMetadata,
                                                              SupportsHMA)
from vllm.v1.request import RequestStatus


def _key(request: Any) -> tuple | None:
    """What two requests must share for their prompts' KV to be the same: the tokens, the LoRA
    adapter and the cache salt, as vLLM's prefix cache keys them. None for a request with images or
    other encoder inputs, whose KV the tokens do not determine."""
    if request.prompt_token_ids is None or getattr(request, "mm_features", None):
        return None
    lora = getattr(request, "lora_request", None)
    return (getattr(lora, "lora_int_id", 0), getattr(request, "cache_salt", None), tuple(request.prompt_token_ids))


@dataclass
class TailCopies(KVConnectorMetadata):
    """One step's copies, scheduler to worker: (source block, destination block) ids."""

    copies: list[tuple[int, int]] = field(default_factory=list)


class SiblingBlocks(KVConnectorBase_V1, SupportsHMA):
    """See the module's docstring. ``copied_tokens`` counts the prompt tokens it spared."""

    def __init__(self, vllm_config: Any, role: Any, kv_cache_config: Any = None):
        super().__init__(vllm_config, role, kv_cache_config)
        self.block_size = int(vllm_config.cache_config.block_size)
        groups = getattr(kv_cache_config, "kv_cache_groups", None) or []
        # A hybrid model's groups have block tables of their own; this copies one group's blocks.
        self.enabled = len(groups) == 1
        self.num_blocks = int(getattr(kv_cache_config, "num_blocks", 0) or 0)
        self.owners: dict[tuple, tuple[Any, int]] = {}  # _key -> (the owner, its tail block id)
        self.wanted: dict[str, int] = {}  # request id -> index of its tail block
        self.pending: list[tuple[int, int]] = []
        self.copied_tokens = 0
        self.kv_caches: list[Any] = []

    # -- scheduler side ----------------------------------------------------------------------------
    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> tuple[int | None, bool]:
        prompt = request.prompt_token_ids
        if not self.enabled or prompt is None or request.num_output_tokens or request.num_preemptions:
            return 0, False
        params = request.sampling_params
        if params is None or params.prompt_logprobs is not None:
            return 0, False  # vLLM gives prompt log-probs only for the tokens it computes
        last = len(prompt) - 1  # the last prompt token is computed, for its logits
        block = num_computed_tokens // self.block_size
        # Only the tail: the prefix cache gave every full block before it. Most calls end here, so the
        # prompt's key (a tuple of all its tokens) is built only after.
        if last <= num_computed_tokens or num_computed_tokens % self.block_size or last // self.block_size != block:
            return 0, False
        key = _key(request)
        owner = self.owners.get(key) if key else None
        if owner is None or owner[0].request_id == request.request_id:
            return 0, False
        if owner[0].status != RequestStatus.RUNNING:
            del self.owners[key]
            return 0, False
        if not owner[0].num_output_tokens:
            return None, False  # the owner's prompt runs in this step: ask again in the next
        self.wanted[request.request_id] = block
        return last - num_computed_tokens, False

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        block = self.wanted.pop(request.request_id, None)
        key = _key(request) if self.enabled else None
        if key is None:
            return
        ids = blocks.get_block_ids()[0]
        if num_external_tokens == 0:
            tail = (len(request.prompt_token_ids) - 1) // self.block_size
            if key not in self.owners and tail < len(ids) and not request.num_output_tokens:
                self.owners[key] = (request, ids[tail])
            return
        self.pending.append((self.owners[key][1], ids[block]))
        self.copied_tokens += num_external_tokens

    def build_connector_meta(self, scheduler_output: Any) -> TailCopies:
        meta, self.pending = TailCopies(self.pending), []
        return meta

    def request_finished(self, request: Any, block_ids: Any) -> tuple[bool, dict | None]:
        key = _key(request)
        if key and self.owners.get(key, (None,))[0] is request:
            del self.owners[key]
        return False, None

    def request_finished_all_groups(self, request: Any, block_ids: Any) -> tuple[bool, dict | None]:
        return self.request_finished(request, block_ids)

    # -- worker side -------------------------------------------------------------------------------
    def register_kv_caches(self, kv_caches: dict[str, Any]) -> None:
        self.kv_caches = list(kv_caches.values())

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        meta = self._connector_metadata
        if not isinstance(meta, TailCopies) or not meta.copies:
            return
        # vLLM's own block copy (what its copy-on-write prefix hits use): it knows each backend's
        # cache layout. It runs before the forward pass and after the step's new blocks are zeroed.
        from vllm.v1.core.kv_cache_utils import KVCacheBlockCopy
        from vllm.v1.worker.utils import copy_kv_cache_blocks_inplace

        copy_kv_cache_blocks_inplace(self.kv_caches, self.num_blocks,
                                     [KVCacheBlockCopy(src, dst) for src, dst in meta.copies])

    def wait_for_layer_load(self, layer_name: str) -> None:
        pass

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any, **kwargs: Any) -> None:
        pass

    def wait_for_save(self) -> None:
        pass

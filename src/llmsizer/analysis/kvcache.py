"""KV cache and recurrent state: bytes per token and per request, under GQA/MQA, MLA, sliding and
chunked windows, hybrid layers, TP and paging.

Per layer a token keeps what its attention op caches (`graph.Op.cache_elements_per_token`): a key
and a value vector per K/V head for standard attention (seed 003 sec. 2.12: L·S'·h·d·2·sizeof for
MHA; GQA/MQA shrink h to the g KV heads), or, for multi-head latent attention, the latent plus the
rotary key that vLLM, SGLang and transformers 5.x keep (replicated on every TP rank) — or, on
request, the up-projected per-head keys and values ("expanded"). A sliding-window layer stores
the last W - 1 positions between steps (the current token makes W), as transformers'
sliding-window caches do, and a chunked-attention layer likewise C - 1. Linear-attention and
state-space layers keep a state of constant size per sequence instead
(`graph.Op.state_elements`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from llmsizer.graph import CacheLayout, LayerGraph, build_graph
from llmsizer.specs.model import ModelSpec


def kv_heads_per_rank(spec: ModelSpec, tp: int) -> int:
    """K/V heads one TP rank keeps (a whole replicated head when fewer heads than ranks)."""
    for layer in build_graph(spec).layers:
        if layer.attention is not None:
            return layer.attention.rank_heads(tp)[1]
    return 0


@dataclass(frozen=True)
class KVCache:
    spec: ModelSpec
    dtype_bytes: float
    tp: int = 1
    layers: tuple[int, ...] | None = None  # the layers this device holds (pipeline stage)
    block_size: int | None = None  # paged attention block (vLLM default 16); None: exact
    layout: CacheLayout = "engine"  # see graph.CacheLayout

    def _layers(self) -> list[LayerGraph]:
        graph = build_graph(self.spec)
        if self.layers is None:
            return list(graph.layers)
        return [graph.layers[i] for i in self.layers]

    @cached_property
    def _per_layer(self) -> tuple[tuple[float, int | None, float], ...]:
        """(bytes per cached token, positions kept at most, state bytes per sequence) per layer."""
        out = []
        for layer in self._layers():
            per_token = state = 0.0
            for op in layer.ops:
                per_token += op.cache_elements_per_token(self.tp, self.layout) * self.dtype_bytes
                state += op.state_elements(self.tp, self.layout) * self.dtype_bytes
            # A window of W keeps W - 1 positions between steps (the current token makes W); a
            # chunk of C likewise keeps C - 1 (transformers' sliding-window cache layers).
            visible = layer.keys_visible
            out.append((per_token, None if visible is None else visible - 1, state))
        return tuple(out)

    @property
    def bytes_per_token(self) -> float:
        """For a token within every layer's window (the figure usually quoted per token)."""
        return sum(p for p, _, _ in self._per_layer)

    @property
    def state_bytes_per_sequence(self) -> float:
        """Recurrent state (linear attention, SSM) of one sequence, whatever its length."""
        return sum(s for _, _, s in self._per_layer)

    def positions_kept(self, limit: int | None, tokens: int) -> int:
        kept = tokens if limit is None else min(tokens, limit)
        if self.block_size:
            kept = math.ceil(kept / self.block_size) * self.block_size
        return kept

    def bytes_for(self, tokens: int, batch: int = 1) -> float:
        """Bytes for `batch` sequences of `tokens` positions each."""
        per_seq = sum(per * self.positions_kept(limit, tokens) + state
                      for per, limit, state in self._per_layer)
        return batch * per_seq

    def bytes_per_token_at(self, tokens: int) -> float:
        """Average bytes per token of one sequence of `tokens` positions (windows, chunks and
        recurrent state included)."""
        return self.bytes_for(tokens) / tokens

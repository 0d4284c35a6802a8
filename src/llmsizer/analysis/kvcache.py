"""KV cache: bytes per token and per request, under GQA/MQA, sliding windows, TP and paging.

Per layer a token keeps one key and one value vector per KV head: 2·g·d elements (seed 003
sec. 2.12: L·S'·h·d·2·sizeof(dtype) for MHA; GQA/MQA shrink h to the g KV heads). With tensor
parallelism each rank keeps its share of KV heads, or one whole head when there are fewer KV heads
than ranks (vLLM replicates them). A sliding-window layer stores the last W - 1 positions between
steps (the current token makes W), as transformers' sliding-window caches do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmsizer.graph import build_graph
from llmsizer.specs.model import ModelSpec


def kv_heads_per_rank(spec: ModelSpec, tp: int) -> int:
    return max(1, spec.kv_heads // tp)


@dataclass(frozen=True)
class KVCache:
    spec: ModelSpec
    dtype_bytes: float
    tp: int = 1
    layers: tuple[int, ...] | None = None  # the layers this device holds (pipeline stage)
    block_size: int | None = None  # paged attention block (vLLM default 16); None: exact

    def _layer_indices(self) -> tuple[int, ...]:
        return self.layers if self.layers is not None else tuple(range(self.spec.num_layers))

    @property
    def bytes_per_token_per_layer(self) -> float:
        return 2 * kv_heads_per_rank(self.spec, self.tp) * self.spec.head_size * self.dtype_bytes

    @property
    def bytes_per_token(self) -> float:
        """For a token within every layer's window (the usual figure quoted per token)."""
        return len(self._layer_indices()) * self.bytes_per_token_per_layer

    def positions_kept(self, layer: int, tokens: int) -> int:
        window = build_graph(self.spec).layers[layer].sliding_window
        kept = tokens if window is None else min(tokens, window - 1)
        if self.block_size:
            kept = math.ceil(kept / self.block_size) * self.block_size
        return kept

    def bytes_for(self, tokens: int, batch: int = 1) -> float:
        """Bytes for `batch` sequences of `tokens` positions each."""
        per_layer = self.bytes_per_token_per_layer
        return batch * sum(self.positions_kept(i, tokens) * per_layer
                           for i in self._layer_indices())

"""Speculative decoding: k drafted tokens per step, verified by one target pass.

Expected tokens per target step with an i.i.d. per-token acceptance rate α and k drafted tokens
(Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding",
arXiv 2211.17192, §3.1 Eq. 1):

    E = (1 − α^(k+1)) / (1 − α)        (k + 1 when α = 1; 1 when α = 0)

Costs per decode step of a batch of d sequences (serving/step_cost.py adds them):
  verify  the target runs k + 1 tokens per sequence (the last accepted token and the k drafts):
          every linear op sees d·(k+1) rows, the lm_head d·(k+1) logits, attention (k+1)·context
          pairs per sequence over the same keys;
  draft   "draft": the draft model's own per-op roofline, k decode steps of batch d, and its
          prefill of every prompt chunk; "mtp"/"eagle": one decoder layer of the target plus the
          lm_head per drafted token (DeepSeek-V3's MTP module is one transformer block,
          arXiv 2412.19437 §2.2; EAGLE's draft head one decoder layer, arXiv 2401.15077 §3), and
          one such layer over every prompt chunk.
Memory: the draft's weights and its KV cache share the pool (draft model: its own weights and KV
bytes per token; MTP/EAGLE: one target layer's), and every sequence holds KV slots for the k
tokens it verifies plus k lookahead slots (vLLM reserves `num_lookahead_tokens =
num_speculative_tokens` per request: vllm@00024d3 vllm/v1/core/sched/scheduler.py `__init__`).

The simulator advances every decoding sequence by the expected number of tokens: after n steps a
sequence has emitted ⌊n·E⌋ of them (the same for all sequences at a step), so throughput and mean
TPOT follow Eq. 1; the spread of acceptance lengths between requests is not modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmsizer.errors import SpecError
from llmsizer.specs.model import ModelSpec

METHODS = ("draft", "mtp", "eagle")


def expected_tokens(k: int, alpha: float) -> float:
    """Leviathan et al. Eq. 1: E[tokens per target step] = (1 − α^(k+1)) / (1 − α)."""
    if not 0 <= alpha <= 1:
        raise SpecError("acceptance", alpha, "a rate in [0, 1]")
    if k < 0:
        raise SpecError("spec-tokens", k, "0 or more")
    if alpha == 1:
        return float(k + 1)
    return (1 - alpha ** (k + 1)) / (1 - alpha)


@dataclass(frozen=True)
class Speculation:
    method: str  # "draft" | "mtp" | "eagle"
    k: int  # drafted tokens per step
    acceptance: float  # α
    draft: ModelSpec | None = None  # the draft model ("draft" only)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SpecError("speculative", self.method, "draft:MODEL, mtp or eagle")
        if not isinstance(self.k, int) or not 1 <= self.k <= 64:
            raise SpecError("spec-tokens", self.k, "an integer in [1, 64]")
        expected_tokens(self.k, self.acceptance)
        if (self.method == "draft") != (self.draft is not None):
            raise SpecError("speculative", self.method, "draft:MODEL names its draft model")

    @property
    def expected_tokens(self) -> float:
        return expected_tokens(self.k, self.acceptance)

    @property
    def verify_tokens(self) -> int:
        """Tokens of each sequence the target runs per decode step."""
        return self.k + 1

    @property
    def reserved_slots(self) -> int:
        """KV slots a sequence holds beyond its accepted context: the k it verifies and k
        lookahead slots for the next drafts."""
        return 2 * self.k

    def describe(self) -> str:
        what = f"draft model {self.draft.name}" if self.draft else self.method.upper()
        return (f"{what}, k={self.k}, acceptance {self.acceptance:g}: "
                f"{self.expected_tokens:.2f} tokens per target step")


def cumulative_tokens(step: int, e: float) -> int:
    """Tokens each decoding sequence has gained after `step` decode steps: ⌊step·E⌋ (exact
    integers when E is one)."""
    if e == 1.0:
        return step
    return math.floor(step * e + 1e-9)


def steps_to_reach(tokens: int, e: float) -> int:
    """The fewest steps n with cumulative_tokens(n, e) >= tokens."""
    if e == 1.0:
        return max(0, tokens)
    n = max(0, math.ceil(tokens / e - 1e-9))
    while cumulative_tokens(n, e) < tokens:
        n += 1
    while n > 0 and cumulative_tokens(n - 1, e) >= tokens:
        n -= 1
    return n

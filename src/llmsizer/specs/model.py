"""ModelSpec: the architecture of a decoder-only transformer, validated when built.

Everything else in llmsizer (parameter counts, FLOPs, memory, time) is derived from this
description through the op graph (`llmsizer.graph`). The fields are the architecture's free
choices; anything that follows from them (head_dim by default, the number of MoE layers, ...)
is derived, not stored twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from llmsizer.errors import SpecError

FFNKind = Literal["mlp", "gated"]
Norm = Literal["layernorm", "rmsnorm"]
Position = Literal["learned", "rotary", "alibi", "none"]

FFN_KINDS = ("mlp", "gated")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rotary", "alibi", "none")


def _positive(field_name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SpecError(field_name, value, "a positive integer")


def _choice(field_name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(field_name, value, "one of " + ", ".join(allowed))


@dataclass(frozen=True)
class MoESpec:
    """Mixture-of-experts feed-forward blocks.

    `moe_layers` lists the layer indices (0-based) whose FFN is the MoE block; the others use
    the dense FFN of the ModelSpec. Shared experts (Qwen-MoE, DeepSeek) run for every token.
    """

    num_experts: int
    top_k: int
    expert_ffn_size: int
    moe_layers: tuple[int, ...]
    shared_experts: int = 0
    shared_expert_ffn_size: int = 0  # per shared expert
    shared_expert_gate: bool = False  # Qwen2-MoE: sigmoid gate Linear(h, 1) on the shared expert
    router_bias: bool = False

    def validate(self, num_layers: int) -> None:
        _positive("moe.num_experts", self.num_experts)
        _positive("moe.top_k", self.top_k)
        if self.top_k > self.num_experts:
            raise SpecError("moe.top_k", self.top_k,
                            f"at most num_experts ({self.num_experts})")
        _positive("moe.expert_ffn_size", self.expert_ffn_size)
        if self.shared_experts < 0:
            raise SpecError("moe.shared_experts", self.shared_experts, "0 or more")
        if self.shared_experts:
            _positive("moe.shared_expert_ffn_size", self.shared_expert_ffn_size)
        bad = [i for i in self.moe_layers if not 0 <= i < num_layers]
        if bad:
            raise SpecError("moe.moe_layers", bad[0], f"layer indices in [0, {num_layers})")
        if len(set(self.moe_layers)) != len(self.moe_layers):
            raise SpecError("moe.moe_layers", list(self.moe_layers), "distinct layer indices")


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer.

    Attention: `num_heads` query heads of size `head_dim` (default hidden_size // num_heads,
    which Gemma, for one, overrides) and `num_kv_heads` key/value heads (MHA: equal to num_heads;
    MQA: 1; GQA: a divisor of num_heads).

    FFN: "mlp" is the two-matrix up/down block (GELU/ReLU); "gated" is the three-matrix
    gate/up/down block (SwiGLU/GeGLU) of width `ffn_size`.
    """

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    vocab_size: int
    ffn_size: int
    num_kv_heads: int | None = None  # None -> num_heads (MHA)
    head_dim: int | None = None  # None -> hidden_size // num_heads
    ffn_kind: FFNKind = "gated"
    activation: str = "silu"
    tie_embeddings: bool = False
    position: Position = "rotary"
    max_seq_len: int = 2048
    learned_position_rows: int = 0  # rows of a learned position table (OPT adds 2 to max_seq_len)
    norm: Norm = "rmsnorm"
    norm_bias: bool = False  # LayerNorm with a bias (beta) vector
    norms_per_layer: int = 2  # Gemma-2 has 4, Falcon-7B (parallel block) 1
    final_norm: bool = True
    embedding_norm: bool = False  # BLOOM: a LayerNorm right after the word embeddings
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    parallel_block: bool = False  # attention and FFN read the same input (GPT-J, Falcon, NeoX)
    embed_proj_dim: int | None = None  # OPT-350m: embeddings narrower than hidden, projected in/out
    sliding_window: int | None = None
    sliding_window_layers: tuple[int, ...] | None = None  # None: all layers when sliding_window set
    moe: MoESpec | None = None
    source: str = ""
    extras: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpecError("name", self.name, "a non-empty string")
        for f in ("num_layers", "hidden_size", "num_heads", "vocab_size", "ffn_size", "max_seq_len"):
            _positive(f, getattr(self, f))
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        _positive("num_kv_heads", self.kv_heads)
        if self.kv_heads > self.num_heads or self.num_heads % self.kv_heads:
            raise SpecError("num_kv_heads", self.kv_heads,
                            f"a divisor of num_heads ({self.num_heads})")
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise SpecError("num_heads", self.num_heads,
                                f"a divisor of hidden_size ({self.hidden_size}) unless head_dim "
                                "is given")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        _positive("head_dim", self.head_size)
        _choice("ffn_kind", self.ffn_kind, FFN_KINDS)
        _choice("norm", self.norm, NORMS)
        _choice("position", self.position, POSITIONS)
        if self.norms_per_layer < 0:
            raise SpecError("norms_per_layer", self.norms_per_layer, "0 or more")
        if self.learned_position_rows < 0:
            raise SpecError("learned_position_rows", self.learned_position_rows, "0 or more")
        if self.position == "learned" and self.learned_position_rows == 0:
            object.__setattr__(self, "learned_position_rows", self.max_seq_len)
        if self.position != "learned" and self.learned_position_rows:
            raise SpecError("learned_position_rows", self.learned_position_rows,
                            "0 unless position is 'learned'")
        if self.embed_proj_dim is not None:
            _positive("embed_proj_dim", self.embed_proj_dim)
        if self.sliding_window is not None:
            _positive("sliding_window", self.sliding_window)
        if self.moe is not None:
            self.moe.validate(self.num_layers)

    # Derived values, typed as ints for callers (the Optional fields are filled in __post_init__).
    @property
    def kv_heads(self) -> int:
        assert self.num_kv_heads is not None
        return self.num_kv_heads

    @property
    def head_size(self) -> int:
        assert self.head_dim is not None
        return self.head_dim

    @property
    def q_dim(self) -> int:
        """Width of the concatenated query heads (equals hidden_size unless head_dim is set)."""
        return self.num_heads * self.head_size

    @property
    def kv_dim(self) -> int:
        """Width of the concatenated key (or value) heads."""
        return self.kv_heads * self.head_size

    @property
    def attention_kind(self) -> str:
        if self.kv_heads == self.num_heads:
            return "MHA"
        if self.kv_heads == 1:
            return "MQA"
        return "GQA"

    @property
    def embedding_dim(self) -> int:
        return self.embed_proj_dim or self.hidden_size

    def __hash__(self) -> int:
        # Specs key many caches; hash the fields once.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in fields(self) if f.compare))
            object.__setattr__(self, "_hash", cached)
        return cached

    def is_moe_layer(self, index: int) -> bool:
        return self.moe is not None and index in self.moe.moe_layers

    @classmethod
    def from_hf_config(cls, config: Any, name: str | None = None) -> ModelSpec:
        """Build from a Hugging Face `config.json`: a path, a JSON string path, or a dict."""
        from llmsizer.specs.hf import spec_from_hf_config

        return spec_from_hf_config(config, name=name)

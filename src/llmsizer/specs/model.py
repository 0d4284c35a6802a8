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
# What mixes tokens in a layer. Attention layers see the whole context ("full_attention"), the
# last W positions ("sliding_attention") or the positions of their own chunk ("chunked_attention",
# Llama 4); "linear_attention" (Gated DeltaNet, Qwen3-Next) and "mamba" (Mamba-1/2 state-space
# mixers) keep a recurrent state of constant size instead of a per-token cache.
LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention", "linear_attention",
               "mamba")
ATTENTION_LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")
# Normalisation of queries and keys before the dot product:
#   "head": one RMSNorm weight of head_dim shared by all heads (Qwen3, Gemma 3, GLM-4.5)
#   "head_each": a LayerNorm weight per head, heads x head_dim (Cohere Command-R)
#   "full": one RMSNorm over all query (key) heads together, a_q·d (g·d) wide (OLMo 2/3)
#   "l2": a weightless L2 normalisation (Llama 4)
QK_NORMS = ("none", "head", "head_each", "full", "l2")
NORM_PLACEMENTS = ("pre", "post", "sandwich")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rotary", "alibi", "none")


def _positive(field_name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SpecError(field_name, value, "a positive integer")


def _choice(field_name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(field_name, value, "one of " + ", ".join(allowed))


@dataclass(frozen=True)
class MLASpec:
    """Multi-head latent attention (DeepSeek-V2, arXiv 2405.04434, sec. 2.1).

    Queries go through a low-rank bottleneck of `q_lora_rank` (None: a plain h -> a·d_qk
    projection, as in V2-Lite); keys and values are compressed into one latent of
    `kv_lora_rank` per token plus a shared rotary key of `qk_rope_head_dim`, which is what
    serving engines cache. Per head, queries and keys are `qk_nope_head_dim + qk_rope_head_dim`
    wide and values `v_head_dim`.
    """

    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """Values cached per token and layer by MLA serving kernels: latent + rotary key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    def validate(self) -> None:
        if self.q_lora_rank is not None:
            _positive("mla.q_lora_rank", self.q_lora_rank)
        for f in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            _positive(f"mla.{f}", getattr(self, f))


@dataclass(frozen=True)
class LinearAttentionSpec:
    """Gated DeltaNet token mixer (Yang et al. 2024, arXiv 2412.06464; Qwen3-Next): per layer a
    fused q/k/v/z projection, a/b gates, a short causal depthwise convolution over q, k and v, a
    per-value-head recurrent state of key_head_dim x value_head_dim, a gated RMSNorm and an output
    projection."""

    num_key_heads: int
    num_value_heads: int
    key_head_dim: int
    value_head_dim: int
    conv_kernel: int

    @property
    def key_dim(self) -> int:
        return self.num_key_heads * self.key_head_dim

    @property
    def value_dim(self) -> int:
        return self.num_value_heads * self.value_head_dim

    @property
    def conv_channels(self) -> int:
        return 2 * self.key_dim + self.value_dim

    def validate(self) -> None:
        for f in ("num_key_heads", "num_value_heads", "key_head_dim", "value_head_dim",
                  "conv_kernel"):
            _positive(f"linear_attention.{f}", getattr(self, f))


@dataclass(frozen=True)
class MambaSpec:
    """Selective state-space mixer. Version 1 (Gu & Dao 2023, arXiv 2312.00752; Falcon-Mamba):
    per channel of d_inner a state of `state_size`, input-dependent dt of rank `dt_rank`.
    Version 2 (Dao & Gu 2024, arXiv 2405.21060): `num_heads` heads of `head_dim` with scalar
    decay, B and C shared by `n_groups` groups, a gated RMSNorm before the output projection."""

    version: int
    d_inner: int
    state_size: int
    conv_kernel: int
    dt_rank: int = 0  # version 1
    num_heads: int = 0  # version 2
    n_groups: int = 1  # version 2
    conv_bias: bool = True
    proj_bias: bool = False

    @property
    def conv_channels(self) -> int:
        return self.d_inner if self.version == 1 else self.d_inner + 2 * self.n_groups * \
            self.state_size

    @property
    def state_elements(self) -> int:
        """Recurrent SSM state of one sequence in one layer."""
        if self.version == 1:
            return self.d_inner * self.state_size
        return self.d_inner * self.state_size  # num_heads · head_dim · N = d_inner · N

    def validate(self) -> None:
        if self.version not in (1, 2):
            raise SpecError("mamba.version", self.version, "1 or 2")
        for f in ("d_inner", "state_size", "conv_kernel"):
            _positive(f"mamba.{f}", getattr(self, f))
        if self.version == 1:
            _positive("mamba.dt_rank", self.dt_rank)
        else:
            _positive("mamba.num_heads", self.num_heads)
            _positive("mamba.n_groups", self.n_groups)
            if self.d_inner % self.num_heads:
                raise SpecError("mamba.num_heads", self.num_heads,
                                f"a divisor of d_inner ({self.d_inner})")


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
    expert_bias: bool = False  # gpt-oss: biases on every expert's projections
    # Routing details that change no parameter count but do change what a token costs or how
    # the router behaves (recorded so that explanations and exports can state them):
    norm_topk_prob: bool = False  # top-k weights renormalised to sum to 1
    n_group: int = 1  # DeepSeek-V3 group-limited routing: experts in n_group groups ...
    topk_group: int = 1  # ... of which a token may use topk_group
    score_correction_bias: bool = False  # DeepSeek-V3 aux-loss-free balancing (a buffer)

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
        _positive("moe.n_group", self.n_group)
        if self.num_experts % self.n_group:
            raise SpecError("moe.n_group", self.n_group,
                            f"a divisor of num_experts ({self.num_experts})")
        if not 1 <= self.topk_group <= self.n_group:
            raise SpecError("moe.topk_group", self.topk_group, f"in [1, n_group={self.n_group}]")


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
    # Gemma's RMSNorm: the weight is stored as w and applied as x̂·(1 + w), in fp32 (the
    # normalised output kept for backward is fp32, and 1 + w is a tensor of its own)
    norm_unit_offset: bool = False
    embedding_scale: bool = False  # Gemma: embeddings multiplied by √h (a one-element tensor)
    # Gemma 2: scores and final logits soft-capped as cap·tanh(x/cap) (None: off)
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
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
    # Per-layer token mixers (see LAYER_TYPES); None: every layer is attention, sliding where
    # sliding_window/sliding_window_layers say so.
    layer_types: tuple[str, ...] | None = None
    attention_chunk_size: int | None = None  # chunked_attention layers (Llama 4)
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    linear_attention: LinearAttentionSpec | None = None
    mamba: MambaSpec | None = None
    qk_norm: str = "none"
    attention_sinks: bool = False  # gpt-oss: a learned sink logit per head
    attention_output_gate: bool = False  # Qwen3-Next: q_proj also yields a sigmoid gate
    norm_placement: str = "pre"
    # Multi-token-prediction modules (DeepSeek-V3 sec. 2.2; GLM-4.5): trained beside the model and
    # shipped in the checkpoint, but not part of the model transformers builds; counted apart.
    mtp_layers: int = 0
    source: str = ""
    extras: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpecError("name", self.name, "a non-empty string")
        for f in ("num_layers", "hidden_size", "num_heads", "vocab_size", "max_seq_len"):
            _positive(f, getattr(self, f))
        # ffn_size 0: layers without a feed-forward block (pure Mamba models)
        if not isinstance(self.ffn_size, int) or isinstance(self.ffn_size, bool) or \
                self.ffn_size < 0 or (self.ffn_size == 0 and self.mamba is None):
            raise SpecError("ffn_size", self.ffn_size, "a positive integer")
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
        _choice("qk_norm", self.qk_norm, QK_NORMS)
        _choice("norm_placement", self.norm_placement, NORM_PLACEMENTS)
        if self.mtp_layers < 0:
            raise SpecError("mtp_layers", self.mtp_layers, "0 or more")
        for sub in (self.mla, self.linear_attention, self.mamba):
            if sub is not None:
                sub.validate()
        if self.attention_chunk_size is not None:
            _positive("attention_chunk_size", self.attention_chunk_size)
        if self.layer_types is not None:
            types = tuple(self.layer_types)
            object.__setattr__(self, "layer_types", types)
            if len(types) != self.num_layers:
                raise SpecError("layer_types", f"{len(types)} entries",
                                f"one per layer ({self.num_layers})")
            for t in types:
                _choice("layer_types", t, LAYER_TYPES)
            needs = {"sliding_attention": ("sliding_window", self.sliding_window),
                     "chunked_attention": ("attention_chunk_size", self.attention_chunk_size),
                     "linear_attention": ("linear_attention", self.linear_attention),
                     "mamba": ("mamba", self.mamba)}
            for t, (what, value) in needs.items():
                if t in types and value is None:
                    raise SpecError("layer_types", t, f"only with {what} set")

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

    def layer_type(self, index: int) -> str:
        """The token mixer of layer `index` (one of LAYER_TYPES)."""
        if self.layer_types is not None:
            return self.layer_types[index]
        if self.sliding_window is not None and (
                self.sliding_window_layers is None or index in self.sliding_window_layers):
            return "sliding_attention"
        return "full_attention"

    def layer_window(self, index: int) -> int | None:
        """Keys one query of layer `index` may see at most (None: the whole context)."""
        t = self.layer_type(index)
        if t == "sliding_attention":
            return self.sliding_window
        return None

    @classmethod
    def from_hf_config(cls, config: Any, name: str | None = None) -> ModelSpec:
        """Build from a Hugging Face `config.json`: a path, a JSON string path, or a dict."""
        from llmsizer.specs.hf import spec_from_hf_config

        return spec_from_hf_config(config, name=name)

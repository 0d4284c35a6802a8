"""Readers for the model_types llmsizer has read since its first release: Llama, Mistral,
Mixtral, Qwen2(-MoE), Gemma 1/2, Phi-3, GPT-2, GPT-NeoX, GPT-J, BLOOM, Falcon and OPT. Each mirrors
how the matching transformers modeling code builds its modules."""

from __future__ import annotations

from llmsizer.specs.hf_base import _GEMMA_NORMS, _gpt_family, _llama_like, _name, _Reader
from llmsizer.specs.model import ModelSpec, MoESpec


def _llama(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", False)
    return _llama_like(r, name, qkv_bias=bias, out_bias=bias, mlp_bias=r.bool("mlp_bias", False))


def _mistral(r: _Reader, name: str | None) -> ModelSpec:
    return _llama_like(r, name, sliding_window=r.cfg.get("sliding_window") or None)


def _qwen2(r: _Reader, name: str | None) -> ModelSpec:
    window = r.cfg.get("sliding_window") if r.bool("use_sliding_window", False) else None
    layers = r.int("num_hidden_layers")
    window_layers = None
    if window:
        # transformers: layers at index >= max_window_layers use sliding attention.
        start = r.int("max_window_layers", default=28)
        window_layers = tuple(i for i in range(layers) if i >= start)
    return _llama_like(r, name, qkv_bias=True, sliding_window=window or None,
                       sliding_window_layers=window_layers)


def _mixtral(r: _Reader, name: str | None) -> ModelSpec:
    layers = r.int("num_hidden_layers")
    moe = MoESpec(
        num_experts=r.int("num_local_experts", default=8),
        top_k=r.int("num_experts_per_tok", default=2),
        expert_ffn_size=r.int("intermediate_size"),
        moe_layers=tuple(range(layers)),
    )
    return _llama_like(r, name, moe=moe, sliding_window=r.cfg.get("sliding_window") or None)


def _qwen2_moe(r: _Reader, name: str | None) -> ModelSpec:
    layers = r.int("num_hidden_layers")
    experts = r.count("num_experts", default=60)
    step = r.int("decoder_sparse_step", default=1)
    dense_only = set(r.list_of_ints("mlp_only_layers") or [])
    # transformers: a layer is sparse unless listed in mlp_only_layers, when
    # num_experts > 0 and (index + 1) % decoder_sparse_step == 0.
    moe_layers = tuple(i for i in range(layers)
                       if i not in dense_only and experts > 0 and (i + 1) % step == 0)
    shared = r.int("shared_expert_intermediate_size", default=5632)
    moe = MoESpec(
        num_experts=experts,
        top_k=r.int("num_experts_per_tok", default=4),
        expert_ffn_size=r.int("moe_intermediate_size", default=1408),
        moe_layers=moe_layers,
        shared_experts=1 if shared else 0,
        shared_expert_ffn_size=shared,
        shared_expert_gate=bool(shared),
    ) if moe_layers else None
    qkv_bias = r.bool("qkv_bias", True)
    return _llama_like(r, name, qkv_bias=qkv_bias, moe=moe)


def _gemma(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", False)
    return _llama_like(r, name, tie_default=True, qkv_bias=bias, out_bias=bias,
                       act_key="hidden_activation" if "hidden_activation" in r.cfg else "hidden_act",
                       act_default="gelu_pytorch_tanh", **_GEMMA_NORMS)


def _gemma2(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", False)
    layers = r.int("num_hidden_layers")
    types = r.cfg.get("layer_types") or [
        "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    window = r.opt("sliding_window", 4096)
    return _llama_like(
        r, name, tie_default=True, qkv_bias=bias, out_bias=bias, norms_per_layer=4,
        act_key="hidden_activation", act_default="gelu_pytorch_tanh",
        sliding_window=window,
        sliding_window_layers=tuple(i for i, t in enumerate(types) if t == "sliding_attention"),
        # Gemma2Config's defaults when absent
        attn_logit_softcap=r.cap("attn_logit_softcapping", 50.0),
        final_logit_softcap=r.cap("final_logit_softcapping", 30.0),
        **_GEMMA_NORMS,
    )


def _phi3(r: _Reader, name: str | None) -> ModelSpec:
    return _llama_like(r, name, sliding_window=r.cfg.get("sliding_window") or None)


def _gpt2(r: _Reader, name: str | None) -> ModelSpec:
    return _gpt_family(r, name, tie_embeddings=r.bool("tie_word_embeddings", True),
                       position="learned",
                       max_seq_len=r.int("n_positions", "max_position_embeddings"),
                       qkv_bias=True, out_bias=True, mlp_bias=True)


def _gpt_neox(r: _Reader, name: str | None) -> ModelSpec:
    bias = r.bool("attention_bias", True)
    return ModelSpec(
        name=_name(r, name),
        num_layers=r.int("num_hidden_layers"),
        hidden_size=r.int("hidden_size"),
        num_heads=r.int("num_attention_heads"),
        vocab_size=r.int("vocab_size"),
        ffn_size=r.int("intermediate_size"),
        ffn_kind="mlp",
        activation=str(r.opt("hidden_act", "gelu")),
        tie_embeddings=r.bool("tie_word_embeddings", False),
        position="rotary",
        max_seq_len=r.int("max_position_embeddings", default=2048),
        norm="layernorm",
        norm_bias=True,
        qkv_bias=bias,
        out_bias=bias,
        mlp_bias=True,
        parallel_block=r.bool("use_parallel_residual", True),
    )


def _gptj(r: _Reader, name: str | None) -> ModelSpec:
    # transformers GPTJBlock: one LayerNorm feeding attention and MLP in parallel; q/k/v/out
    # without biases, fc_in/fc_out with; an untied lm_head with a bias.
    return _gpt_family(r, name, tie_embeddings=r.bool("tie_word_embeddings", False),
                       position="rotary",
                       max_seq_len=r.int("n_positions", "max_position_embeddings", default=2048),
                       norms_per_layer=1, qkv_bias=False, out_bias=False, mlp_bias=True,
                       lm_head_bias=True, parallel_block=True)


def _bloom(r: _Reader, name: str | None) -> ModelSpec:
    hidden = r.int("n_embed", "hidden_size")
    return ModelSpec(
        name=_name(r, name),
        num_layers=r.int("n_layer", "num_hidden_layers"),
        hidden_size=hidden,
        num_heads=r.int("n_head", "num_attention_heads"),
        vocab_size=r.int("vocab_size"),
        ffn_size=4 * hidden,
        ffn_kind="mlp",
        activation="gelu",
        tie_embeddings=r.bool("tie_word_embeddings", True),
        position="alibi",
        max_seq_len=r.int("seq_length", default=2048),
        norm="layernorm",
        norm_bias=True,
        embedding_norm=True,
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
    )


def _falcon(r: _Reader, name: str | None) -> ModelSpec:
    hidden = r.int("hidden_size")
    heads = r.int("num_attention_heads", "n_head")
    new_arch = r.bool("new_decoder_architecture", False)
    multi_query = r.bool("multi_query", True)
    # transformers FalconAttention: the new architecture has num_kv_heads K/V heads; the old one
    # is multi-query (1 K/V head) or plain multi-head (its fused QKV is 3·hidden wide).
    if new_arch:
        kv = r.int("num_kv_heads", "n_head_kv", default=heads)
    else:
        kv = 1 if multi_query else heads
    parallel = r.bool("parallel_attn", True)
    n_ln = r.cfg.get("num_ln_in_parallel_attn")
    if n_ln is None and new_arch:
        n_ln = 2
    norms = 2 if (not parallel or n_ln == 2) else 1
    bias = r.bool("bias", False)
    alibi = r.bool("alibi", False)
    return ModelSpec(
        name=_name(r, name),
        num_layers=r.int("num_hidden_layers", "n_layer"),
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv,
        vocab_size=r.int("vocab_size"),
        ffn_size=r.int("ffn_hidden_size", default=4 * hidden),
        ffn_kind="mlp",
        activation="gelu",
        tie_embeddings=r.bool("tie_word_embeddings", True),
        position="alibi" if alibi else "rotary",
        max_seq_len=r.int("max_position_embeddings", default=2048),
        norm="layernorm",
        norm_bias=True,
        norms_per_layer=norms,
        qkv_bias=bias,
        out_bias=bias,
        mlp_bias=bias,
        parallel_block=parallel,
    )


def _opt(r: _Reader, name: str | None) -> ModelSpec:
    hidden = r.int("hidden_size")
    proj = r.int("word_embed_proj_dim", default=hidden)
    bias = r.bool("enable_bias", True)
    pre_ln = r.bool("do_layer_norm_before", True)
    affine = r.bool("layer_norm_elementwise_affine", True)
    max_pos = r.int("max_position_embeddings", default=2048)
    return ModelSpec(
        name=_name(r, name),
        num_layers=r.int("num_hidden_layers"),
        hidden_size=hidden,
        num_heads=r.int("num_attention_heads"),
        vocab_size=r.int("vocab_size"),
        ffn_size=r.int("ffn_dim"),
        ffn_kind="mlp",
        activation=str(r.opt("activation_function", "relu")),
        tie_embeddings=r.bool("tie_word_embeddings", True),
        position="learned",
        max_seq_len=max_pos,
        # OPTLearnedPositionalEmbedding keeps 2 extra rows (an offset kept from fairseq).
        learned_position_rows=max_pos + 2,
        norm="layernorm",
        norm_bias=affine,
        norms_per_layer=2 if affine else 0,
        final_norm=affine and pre_ln and not r.bool("_remove_final_layer_norm", False),
        qkv_bias=bias,
        out_bias=bias,
        mlp_bias=bias,
        embed_proj_dim=proj if proj != hidden else None,
    )

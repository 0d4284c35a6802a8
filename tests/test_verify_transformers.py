"""Parameter counts against the truth: the models Hugging Face `transformers` instantiates.

Every catalog model is built from its config on PyTorch's `meta` device (no memory, no weights)
and its parameters counted; llmsizer's exact count must be equal, in total and per group
(attention, FFN, norms, embeddings + head). Skipped when torch/transformers are not installed
(`pip install -e .[verify]`); CI installs them.
"""

import pytest

from llmsizer import count_params
from llmsizer.catalog import list_models
from llmsizer.specs.hf import spec_from_hf_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.verify


# Multimodal wrappers: the language model is what llmsizer counts (the rest is named as excluded).
WRAPPED = {"gemma3": "gemma3_text", "llama4": "llama4_text", "mistral3": "mistral",
           "qwen3_5": "qwen3_5_text", "qwen3_5_moe": "qwen3_5_moe_text"}


def hf_model(config: dict):
    if config["model_type"] in WRAPPED and "text_config" in config:
        text = dict(config["text_config"])
        text.setdefault("model_type", WRAPPED[config["model_type"]])
        if "tie_word_embeddings" in config and "tie_word_embeddings" not in text:
            text["tie_word_embeddings"] = config["tie_word_embeddings"]
        config = text
    cfg = transformers.AutoConfig.for_model(
        config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(cfg)


def hf_groups(model) -> dict[str, int]:
    """Classify transformers' parameter names (39 architectures' naming) into four groups, by
    the module that owns each parameter (so "norm_attn_norm.attn.Wqkv" is attention)."""
    groups = {"attention": 0, "ffn": 0, "norm": 0, "embedding_and_head": 0}
    for name, p in model.named_parameters():  # tied weights appear once
        n = name.lower()
        parts = n.split(".")
        owner = parts[-2] if len(parts) > 1 else ""
        if "norm" in owner or owner.startswith("ln_") or owner == "ln_f":
            g = "norm"
        elif any(k in n for k in ("self_attn", ".attn.", "self_attention", ".attention.",
                                  "linear_attn", ".mixer.")):
            g = "attention"
        elif any(k in n for k in (".mlp.", ".fc1.", ".fc2.", "experts", "shared_expert",
                                  "block_sparse_moe", "feed_forward", ".ffn.")):
            g = "ffn"
        else:
            g = "embedding_and_head"
        groups[g] += p.numel()
    return groups


def our_groups(counts) -> dict[str, int]:
    groups = {"attention": 0, "ffn": 0, "norm": 0, "embedding_and_head": 0}
    for key, n in counts.breakdown.items():
        if key.startswith(("attention.", "mixer.")):
            g = "attention"
        elif key.startswith(("mlp.", "moe.")):
            g = "ffn"
        elif key.startswith(("norms.", "embedding.norm")):
            g = "norm"
        else:
            g = "embedding_and_head"
        groups[g] += n
    return groups


def check(config: dict, spec) -> None:
    model = hf_model(config)
    expected_total = sum(p.numel() for p in model.parameters())
    counts = count_params(spec)
    assert counts.total == expected_total
    assert our_groups(counts) == hf_groups(model)


@pytest.mark.parametrize("entry", list_models(), ids=lambda e: e.name)
def test_catalog_model_matches_transformers(entry):
    check(entry.config, entry.spec())


# Variants the catalog does not exercise: every bias flag, fused/unfused layouts, MoE layouts.
VARIANTS = {
    "llama-all-biases": dict(model_type="llama", hidden_size=256, intermediate_size=688,
                             num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=3,
                             vocab_size=1000, attention_bias=True, mlp_bias=True,
                             tie_word_embeddings=True),
    "llama-head-dim": dict(model_type="llama", hidden_size=256, intermediate_size=512,
                           num_attention_heads=4, head_dim=96, num_hidden_layers=2,
                           vocab_size=500),
    "qwen2-tied": dict(model_type="qwen2", hidden_size=128, intermediate_size=256,
                       num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                       vocab_size=300, tie_word_embeddings=True),
    "qwen2-moe-mixed": dict(model_type="qwen2_moe", hidden_size=64, intermediate_size=128,
                            num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=6, vocab_size=100,
                            num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                            shared_expert_intermediate_size=64, decoder_sparse_step=2,
                            mlp_only_layers=[3], qkv_bias=False),
    "mixtral-small": dict(model_type="mixtral", hidden_size=64, intermediate_size=96,
                          num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=2,
                          vocab_size=100, num_local_experts=4, num_experts_per_tok=1),
    "gpt2-n-inner": dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, vocab_size=100,
                         n_positions=32, n_inner=100),
    "gpt-neox-untied-sequential": dict(model_type="gpt_neox", hidden_size=64, intermediate_size=256,
                                       num_attention_heads=4, num_hidden_layers=2,
                                       vocab_size=100, use_parallel_residual=False,
                                       attention_bias=False),
    "falcon-mha-sequential-bias": dict(model_type="falcon", hidden_size=64, num_attention_heads=4,
                                       num_hidden_layers=2, vocab_size=100, multi_query=False,
                                       parallel_attn=False, bias=True),
    "falcon-new-arch": dict(model_type="falcon", hidden_size=64, num_attention_heads=8,
                            num_kv_heads=2, num_hidden_layers=2, vocab_size=100,
                            new_decoder_architecture=True, ffn_hidden_size=96),
    "opt-350m-like": dict(model_type="opt", hidden_size=64, num_attention_heads=4,
                          num_hidden_layers=2, ffn_dim=256, vocab_size=100,
                          word_embed_proj_dim=32, do_layer_norm_before=False,
                          max_position_embeddings=64),
    "opt-no-bias": dict(model_type="opt", hidden_size=64, num_attention_heads=4,
                        num_hidden_layers=2, ffn_dim=256, vocab_size=100, enable_bias=False),
    "gptj-small": dict(model_type="gptj", n_embd=64, n_layer=2, n_head=4, vocab_size=100,
                       n_positions=32, rotary_dim=8),
    "bloom-small": dict(model_type="bloom", hidden_size=64, n_layer=2, n_head=4, vocab_size=100),
    "gemma2-small": dict(model_type="gemma2", hidden_size=64, intermediate_size=128,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                         num_hidden_layers=4, vocab_size=100),
    "gemma-untied": dict(model_type="gemma", hidden_size=64, intermediate_size=128,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=48,
                         num_hidden_layers=2, vocab_size=100, tie_word_embeddings=False),
    "phi3-gqa": dict(model_type="phi3", hidden_size=96, intermediate_size=192,
                     num_attention_heads=6, num_key_value_heads=2, num_hidden_layers=2,
                     vocab_size=32064),
    "mistral-window": dict(model_type="mistral", hidden_size=64, intermediate_size=128,
                           num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                           vocab_size=100, sliding_window=16),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_matches_transformers(name):
    config = VARIANTS[name]
    check(config, spec_from_hf_config(config))


# One small config per newer architecture feature, each read the way transformers builds it.
_S = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
          vocab_size=100)
_MLA = dict(kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8)
NEW_VARIANTS = {
    "qwen3-qk-norm": dict(_S, model_type="qwen3", num_hidden_layers=2, head_dim=16),
    "qwen3-bias-tied": dict(_S, model_type="qwen3", num_hidden_layers=2, attention_bias=True,
                            tie_word_embeddings=True),
    "qwen3-moe-dense-layers": dict(_S, model_type="qwen3_moe", num_hidden_layers=4, num_experts=4,
                                   num_experts_per_tok=2, moe_intermediate_size=32, head_dim=16,
                                   mlp_only_layers=[0], decoder_sparse_step=1),
    "qwen3-next-hybrid": dict(_S, model_type="qwen3_next", num_hidden_layers=4, num_experts=4,
                              num_experts_per_tok=2, moe_intermediate_size=32,
                              shared_expert_intermediate_size=48, head_dim=16,
                              linear_num_key_heads=2, linear_num_value_heads=4,
                              linear_key_head_dim=8, linear_value_head_dim=8),
    "qwen3.5-dense-hybrid": dict(_S, model_type="qwen3_5_text", num_hidden_layers=4, head_dim=16,
                                 linear_num_key_heads=2, linear_num_value_heads=4,
                                 linear_key_head_dim=8, linear_value_head_dim=8),
    "deepseek-v3-mla-moe": dict(_MLA, model_type="deepseek_v3", hidden_size=64,
                                intermediate_size=96, moe_intermediate_size=32,
                                num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=3,
                                first_k_dense_replace=1, n_routed_experts=8,
                                num_experts_per_tok=2, n_shared_experts=1, n_group=2,
                                topk_group=1, vocab_size=100, q_lora_rank=24),
    "deepseek-v2-lite-no-q-lora": dict(_MLA, model_type="deepseek_v2", hidden_size=64,
                                       intermediate_size=96, moe_intermediate_size=32,
                                       num_attention_heads=4, num_key_value_heads=4,
                                       num_hidden_layers=3, first_k_dense_replace=1,
                                       n_routed_experts=8, num_experts_per_tok=2,
                                       n_shared_experts=2, vocab_size=100, q_lora_rank=None),
    "gemma3-sandwich-qk-norm": dict(_S, model_type="gemma3_text", num_hidden_layers=7,
                                    head_dim=16, sliding_window=32),
    "gpt-oss-sinks-biased-experts": dict(_S, model_type="gpt_oss", num_hidden_layers=2,
                                         num_local_experts=4, num_experts_per_tok=2, head_dim=16),
    "llama4-interleaved-moe": dict(_S, model_type="llama4_text", num_hidden_layers=4,
                                   intermediate_size_mlp=128, num_local_experts=4,
                                   num_experts_per_tok=1, interleave_moe_layer_step=2,
                                   head_dim=16),
    "olmo-nonparametric-norm": dict(_S, model_type="olmo", num_hidden_layers=2),
    "olmo2-post-norm-full-qk-norm": dict(_S, model_type="olmo2", num_hidden_layers=2),
    "olmo3-windows": dict(_S, model_type="olmo3", num_hidden_layers=4, sliding_window=16),
    "glm4-sandwich": dict(_S, model_type="glm4", num_hidden_layers=2, pad_token_id=0, head_dim=16),
    "glm4-moe-shared-qk-norm": dict(_S, model_type="glm4_moe", num_hidden_layers=3,
                                    first_k_dense_replace=1, n_routed_experts=8,
                                    num_experts_per_tok=2, n_shared_experts=1,
                                    moe_intermediate_size=32, use_qk_norm=True, head_dim=16,
                                    attention_bias=True),
    "phimoe-layernorm-bias": dict(_S, model_type="phimoe", num_hidden_layers=2,
                                  num_local_experts=4, num_experts_per_tok=2, attention_bias=True,
                                  lm_head_bias=True),
    "cohere-parallel-qk-norm": dict(_S, model_type="cohere", num_hidden_layers=2,
                                    use_qk_norm=True),
    "cohere2-windows": dict(_S, model_type="cohere2", num_hidden_layers=4),
    "granite-bias": dict(_S, model_type="granite", num_hidden_layers=2, attention_bias=True,
                         mlp_bias=True),
    "starcoder2-bias": dict(_S, model_type="starcoder2", num_hidden_layers=2),
    "dbrx-moe": dict(model_type="dbrx", d_model=64, n_heads=4, n_layers=2, vocab_size=100,
                     attn_config={"kv_n_heads": 2, "rope_theta": 10000.0},
                     ffn_config={"ffn_hidden_size": 96, "moe_num_experts": 4, "moe_top_k": 2}),
    "gpt-bigcode-mqa": dict(model_type="gpt_bigcode", n_embd=64, n_head=4, n_layer=2,
                            vocab_size=100, multi_query=True),
    "gpt-bigcode-mha": dict(model_type="gpt_bigcode", n_embd=64, n_head=4, n_layer=2,
                            vocab_size=100, multi_query=False),
    "falcon-mamba": dict(model_type="falcon_mamba", hidden_size=64, num_hidden_layers=2,
                         vocab_size=100, state_size=8, expand=2, conv_kernel=4),
    "mamba-untied-bias": dict(model_type="mamba", hidden_size=64, num_hidden_layers=2,
                              vocab_size=100, state_size=8, use_bias=True,
                              tie_word_embeddings=False),
    "mamba2": dict(model_type="mamba2", hidden_size=64, num_hidden_layers=2, vocab_size=100,
                   state_size=8, expand=2, conv_kernel=4, num_heads=8, head_dim=16, n_groups=2),
}


@pytest.mark.parametrize("name", list(NEW_VARIANTS))
def test_new_architecture_matches_transformers(name):
    config = NEW_VARIANTS[name]
    check(config, spec_from_hf_config(config))

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


def hf_model(config: dict):
    cfg = transformers.AutoConfig.for_model(
        config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(cfg)


def hf_groups(model) -> dict[str, int]:
    """Classify transformers' parameter names (13 architectures' naming) into four groups."""
    groups = {"attention": 0, "ffn": 0, "norm": 0, "embedding_and_head": 0}
    for name, p in model.named_parameters():  # tied weights appear once
        n = name.lower()
        if "norm" in n or ".ln_" in n or n.startswith("ln_"):
            g = "norm"
        elif any(k in n for k in ("self_attn", ".attn.", "self_attention", ".attention.")):
            g = "attention"
        elif any(k in n for k in (".mlp.", ".fc1.", ".fc2.", "experts", "shared_expert",
                                  "block_sparse_moe")):
            g = "ffn"
        else:
            g = "embedding_and_head"
        groups[g] += p.numel()
    return groups


def our_groups(counts) -> dict[str, int]:
    groups = {"attention": 0, "ffn": 0, "norm": 0, "embedding_and_head": 0}
    for key, n in counts.breakdown.items():
        if key.startswith("attention."):
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

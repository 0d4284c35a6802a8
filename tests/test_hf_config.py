"""Reading Hugging Face config.json files, and refusing broken ones clearly."""

import json

import pytest

from llmsizer.errors import LlmsizerError, SpecError
from llmsizer.specs.hf import READERS, spec_from_hf_config

SUPPORTED = ["llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "gemma", "gemma2", "gpt2",
             "gpt_neox", "gptj", "bloom", "falcon", "opt", "phi3"]


def test_every_required_model_type_has_a_reader():
    assert set(SUPPORTED) <= set(READERS)


def test_unsupported_model_type_lists_the_supported_ones():
    with pytest.raises(SpecError) as e:
        spec_from_hf_config({"model_type": "t5", "d_model": 512})
    assert e.value.field == "model_type"
    assert "llama" in str(e.value) and "phi3" in str(e.value)


def test_near_miss_model_type_gets_a_suggestion():
    with pytest.raises(SpecError, match="did you mean 'llama'"):
        spec_from_hf_config({"model_type": "lama"})


def test_missing_core_field_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096,
                                "num_attention_heads": 32, "num_hidden_layers": 32,
                                "vocab_size": 32000}))
    with pytest.raises(LlmsizerError, match="config.json: missing field 'intermediate_size'"):
        spec_from_hf_config(path)


def test_broken_json_names_the_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama",\n "hidden_size": 4096,,}')
    with pytest.raises(LlmsizerError, match="broken JSON at line 2"):
        spec_from_hf_config(path)


def test_missing_model_type_is_named():
    with pytest.raises(LlmsizerError, match="missing field 'model_type'"):
        spec_from_hf_config({"hidden_size": 1})


def test_heads_not_dividing_hidden_is_refused():
    cfg = {"model_type": "llama", "hidden_size": 100, "intermediate_size": 256,
           "num_attention_heads": 3, "num_hidden_layers": 2, "vocab_size": 10, "head_dim": None}
    with pytest.raises(SpecError, match="num_heads=3"):
        spec_from_hf_config(cfg)


def test_falcon_multi_query_has_one_kv_head():
    spec = spec_from_hf_config({"model_type": "falcon", "hidden_size": 4544,
                                "num_attention_heads": 71, "num_hidden_layers": 32,
                                "vocab_size": 65024, "multi_query": True})
    assert spec.kv_heads == 1
    assert spec.norms_per_layer == 1  # parallel attention with a single input LayerNorm


def test_qwen2_moe_respects_sparse_step_and_dense_layers():
    spec = spec_from_hf_config({"model_type": "qwen2_moe", "hidden_size": 64,
                                "intermediate_size": 128, "num_attention_heads": 4,
                                "num_hidden_layers": 6, "vocab_size": 10, "num_experts": 4,
                                "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                "shared_expert_intermediate_size": 64,
                                "decoder_sparse_step": 2, "mlp_only_layers": [3]})
    # transformers: sparse when (i + 1) % step == 0 and i not in mlp_only_layers
    assert spec.moe.moe_layers == (1, 5)

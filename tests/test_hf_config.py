"""Reading Hugging Face config.json files, and refusing broken ones clearly."""

import json

import pytest

from llmsizer.errors import LlmsizerError, SpecError
from llmsizer.specs.hf import READERS, spec_from_hf_config

SUPPORTED = ["llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "gemma", "gemma2", "gpt2",
             "gpt_neox", "gptj", "bloom", "falcon", "opt", "phi3",
             # issue 9: the architectures people run today
             "qwen3", "qwen3_moe", "deepseek_v3", "deepseek_v2", "gemma3_text", "gpt_oss",
             "llama4_text", "olmo2", "olmo3", "glm4_moe", "phimoe", "cohere", "starcoder2",
             "dbrx", "gpt_bigcode", "qwen3_next", "falcon_mamba", "mamba2"]


def test_every_required_model_type_has_a_reader():
    assert set(SUPPORTED) <= set(READERS)


def test_unsupported_model_type_lists_the_supported_ones():
    with pytest.raises(SpecError) as e:
        spec_from_hf_config({"model_type": "t5", "d_model": 512})
    assert e.value.field == "model_type"
    assert "llama" in str(e.value) and "phi3" in str(e.value)


def test_at_least_thirty_model_types_are_read():
    from llmsizer.specs.hf import supported_model_types

    assert len(supported_model_types()) >= 30
    for wrapper in ("gemma3", "llama4", "mistral3"):
        assert wrapper in supported_model_types()


def test_a_spelling_of_a_supported_type_gets_a_suggestion():
    with pytest.raises(SpecError, match="did you mean 'gpt_neox'"):
        spec_from_hf_config({"model_type": "GPT-NeoX"})


@pytest.mark.parametrize("model_type", ["qwen4", "gemma4_text", "llama5", "lama"])
def test_a_different_architecture_is_never_suggested_as_a_typo(model_type):
    # qwen3 once got "did you mean qwen2": relabelling gives a silently wrong model.
    with pytest.raises(SpecError) as e:
        spec_from_hf_config({"model_type": model_type})
    assert "did you mean" not in str(e.value)


def test_a_string_boolean_is_refused_not_read_as_true():
    cfg = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32,
           "num_hidden_layers": 32, "vocab_size": 32000, "intermediate_size": 11008,
           "tie_word_embeddings": "false"}
    with pytest.raises(LlmsizerError, match="tie_word_embeddings='false'.*JSON boolean"):
        spec_from_hf_config(cfg)


def test_a_negative_expert_count_is_refused_not_read_as_dense():
    cfg = {"model_type": "qwen2_moe", "hidden_size": 64, "num_attention_heads": 4,
           "num_hidden_layers": 2, "vocab_size": 100, "intermediate_size": 96,
           "num_experts": -60}
    with pytest.raises(LlmsizerError, match="num_experts=-60"):
        spec_from_hf_config(cfg)


def test_multimodal_wrapper_counts_the_language_model_and_says_what_it_leaves_out():
    text = {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_hidden_layers": 6, "vocab_size": 100, "head_dim": 16}
    spec = spec_from_hf_config({"model_type": "gemma3", "text_config": text,
                                "vision_config": {"hidden_size": 32}})
    assert spec.num_layers == 6 and spec.qk_norm == "head"
    assert "vision" in spec.extras["excluded"]


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


@pytest.mark.parametrize("config,expect", [
    ({"model_type": "deepseek_v3", "hidden_size": 64, "num_attention_heads": 4,
      "num_hidden_layers": 2, "vocab_size": 100, "intermediate_size": 96, "q_lora_rank": "x"},
     "q_lora_rank='x'"),
    ({"model_type": "gemma3_text", "hidden_size": 64, "num_attention_heads": 4,
      "num_hidden_layers": 2, "vocab_size": 100, "intermediate_size": 96,
      "layer_types": ["sliding_attention"]}, "layer_types has 1 entries"),
])
def test_a_bad_field_of_a_newer_architecture_names_the_file(tmp_path, capsys, config, expect):
    from llmsizer.cli import main

    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["params", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and expect in err


@pytest.mark.parametrize("bad", ["x", 0, -1.5, True, [30]])
def test_a_bad_softcapping_value_names_its_key(bad):
    cfg = dict(model_type="gemma2", hidden_size=64, num_attention_heads=2, num_key_value_heads=1,
               head_dim=32, intermediate_size=128, num_hidden_layers=2, vocab_size=100,
               final_logit_softcapping=bad)
    with pytest.raises(LlmsizerError, match="final_logit_softcapping"):
        spec_from_hf_config(cfg)


def test_softcapping_defaults_to_gemma2s_and_null_turns_it_off():
    cfg = dict(model_type="gemma2", hidden_size=64, num_attention_heads=2, num_key_value_heads=1,
               head_dim=32, intermediate_size=128, num_hidden_layers=2, vocab_size=100)
    spec = spec_from_hf_config(cfg)  # Gemma2Config: 50.0 and 30.0 when absent
    assert (spec.attn_logit_softcap, spec.final_logit_softcap) == (50.0, 30.0)
    off = spec_from_hf_config(dict(cfg, attn_logit_softcapping=None))
    assert off.attn_logit_softcap is None and off.final_logit_softcap == 30.0

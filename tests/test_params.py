"""Exact parameter counts against arithmetic written out by hand and published figures."""

import pytest

from llmsizer import ModelSpec, MoESpec, count_params
from llmsizer.analysis.params import shard_params, stage_layers
from llmsizer.errors import SpecError
from llmsizer.specs.hf import spec_from_hf_config

LLAMA2_7B = dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                 num_attention_heads=32, num_hidden_layers=32, num_key_value_heads=32,
                 vocab_size=32000, tie_word_embeddings=False)


def test_llama2_7b_matches_the_published_count():
    # 6,738,415,616: the count Meta's checkpoint has (e.g. Hugging Face's model page "7B",
    # and the exact figure quoted by the Llama 2 release notes of many frameworks).
    assert count_params(spec_from_hf_config(LLAMA2_7B)).total == 6_738_415_616


def test_llama2_7b_written_out():
    h, f, V, L = 4096, 11008, 32000, 32
    per_layer = 4 * h * h + 3 * h * f + 2 * h  # q,k,v,o + gate,up,down + 2 RMSNorm weights
    expected = L * per_layer + 2 * V * h + h  # untied embedding and lm_head, final norm
    counts = count_params(spec_from_hf_config(LLAMA2_7B))
    assert counts.total == expected
    assert counts.breakdown["attention.k_proj.weight"] == L * h * h
    assert counts.breakdown["mlp.gate_proj.weight"] == L * h * f
    assert counts.breakdown["lm_head.weight"] == V * h
    assert counts.embedding == V * h
    assert counts.non_embedding == expected - V * h
    assert counts.active == counts.total


def test_gqa_shrinks_only_k_and_v():
    # Llama-2-70B: 64 query heads, 8 KV heads of 128.
    h, kv = 8192, 8 * 128
    cfg = LLAMA2_7B | dict(hidden_size=h, intermediate_size=28672, num_attention_heads=64,
                           num_key_value_heads=8, num_hidden_layers=80)
    counts = count_params(spec_from_hf_config(cfg))
    assert counts.breakdown["attention.k_proj.weight"] == 80 * h * kv
    assert counts.breakdown["attention.q_proj.weight"] == 80 * h * h
    f, V, L = 28672, 32000, 80
    assert counts.total == L * (2 * h * h + 2 * h * kv + 3 * h * f + 2 * h) + 2 * V * h + h


def test_gpt2_small_written_out():
    # GPT-2 124M: learned positions, biases everywhere, LayerNorm with bias, tied lm_head.
    h, L, V, P = 768, 12, 50257, 1024
    per_layer = (h * 3 * h + 3 * h) + (h * h + h) + (h * 4 * h + 4 * h) + (4 * h * h + h) + 4 * h
    expected = V * h + P * h + L * per_layer + 2 * h
    counts = count_params(spec_from_hf_config(
        dict(model_type="gpt2", n_embd=h, n_layer=L, n_head=12, vocab_size=V, n_positions=P)))
    assert counts.total == expected == 124_439_808
    assert "lm_head.weight" not in counts.breakdown
    assert counts.tied_embeddings


def test_mixtral_total_and_active():
    cfg = LLAMA2_7B | dict(model_type="mixtral", intermediate_size=14336, num_key_value_heads=8,
                           num_local_experts=8, num_experts_per_tok=2)
    counts = count_params(spec_from_hf_config(cfg))
    h, f, L, V, E, k = 4096, 14336, 32, 32000, 8, 2
    attn = 2 * h * h + 2 * h * 1024
    expert = 3 * h * f
    dense = L * (attn + 2 * h + E * h) + 2 * V * h + h  # attention, norms, router; embeddings
    assert counts.total == dense + L * E * expert
    assert counts.active == dense + L * k * expert
    # Mistral AI: "46.7B total parameters but only uses 12.9B parameters per token".
    assert round(counts.total / 1e8) == 467
    assert round(counts.active / 1e8) == 129


def test_shared_experts_are_always_active():
    moe = MoESpec(num_experts=4, top_k=1, expert_ffn_size=16, moe_layers=(1,), shared_experts=1,
                  shared_expert_ffn_size=32, shared_expert_gate=True)
    spec = ModelSpec("m", num_layers=2, hidden_size=8, num_heads=2, vocab_size=10, ffn_size=24,
                     moe=moe)
    c = count_params(spec)
    h = 8
    assert c.breakdown["moe.experts.up_proj.weight"] == 4 * h * 16
    assert c.breakdown["moe.shared_experts.up_proj.weight"] == h * 32
    assert c.breakdown["moe.shared_expert_gate.weight"] == h
    assert c.breakdown["mlp.up_proj.weight"] == h * 24  # layer 0 stays dense
    assert c.total - c.active == 3 * (3 * h * 16)  # three idle routed experts


def test_tensor_parallel_shard_of_llama2_7b():
    spec = spec_from_hf_config(LLAMA2_7B)
    h, f, V, L = 4096, 11008, 32000, 32
    shard = shard_params(spec, tp=8)
    per_layer = (4 * h * h + 3 * h * f) // 8 + 2 * h  # norms are replicated
    assert shard.per_stage == (L * per_layer + 2 * V * h // 8 + h,)


def test_kv_heads_fewer_than_tp_ranks_are_replicated():
    # Llama-2-70B on TP=16: 8 KV heads, so each rank keeps one KV head (as vLLM does).
    cfg = LLAMA2_7B | dict(hidden_size=8192, intermediate_size=28672, num_attention_heads=64,
                           num_key_value_heads=8, num_hidden_layers=80)
    spec = spec_from_hf_config(cfg)
    one_layer = shard_params(spec, tp=16).per_stage[0]
    assert one_layer > 0
    # k and v per rank: one head of 128 over h inputs, i.e. the 8-way shard, not a 16-way one
    eight = shard_params(spec, tp=8).per_stage[0]
    h = 8192
    assert eight - one_layer == 80 * ((2 * h * h + 3 * h * 28672) // 16) + 2 * 32000 * h // 16


def test_pipeline_stages_put_embedding_first_and_head_last():
    spec = spec_from_hf_config(LLAMA2_7B)
    h, f, V = 4096, 11008, 32000
    layer = 4 * h * h + 3 * h * f + 2 * h
    shards = shard_params(spec, pp=4)
    assert shards.per_stage == (8 * layer + V * h, 8 * layer, 8 * layer, 8 * layer + h + V * h)


def test_uneven_pipeline_split_gives_earlier_stages_the_extra_layers():
    assert [len(s) for s in stage_layers(126, 16)] == [8] * 14 + [7] * 2


def test_tied_embedding_is_copied_to_the_last_stage():
    cfg = dict(model_type="gpt2", n_embd=64, n_layer=4, n_head=4, vocab_size=100, n_positions=32)
    spec = spec_from_hf_config(cfg)
    one = shard_params(spec, pp=1).per_stage[0]
    two = shard_params(spec, pp=2).per_stage
    assert sum(two) == one + 100 * 64


@pytest.mark.parametrize("kwargs,field", [
    (dict(tp=3), "tp"), (dict(tp=64), "tp"), (dict(pp=33), "pp"), (dict(ep=2), "ep"),
    (dict(tp=0), "tp"),
])
def test_impossible_sharding_is_refused(kwargs, field):
    spec = spec_from_hf_config(LLAMA2_7B)
    with pytest.raises(SpecError) as e:
        shard_params(spec, **kwargs)
    assert e.value.field == field


def test_explanation_adds_up_to_the_total():
    counts = count_params(spec_from_hf_config(LLAMA2_7B))
    tree = counts.explanation
    assert tree.value == counts.total
    assert sum(c.value for c in tree.children) == counts.total
    layers = tree.children[1]
    assert layers.formula == "L·per_layer"
    assert layers.substituted.startswith("32·")

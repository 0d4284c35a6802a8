"""ModelSpec validation: impossible architectures are refused with the field, value and rule."""

import pytest

from llmsizer import ModelSpec, MoESpec, SpecError


def llama_like(**overrides):
    base = dict(name="t", num_layers=2, hidden_size=64, num_heads=8, vocab_size=100, ffn_size=128)
    return ModelSpec(**(base | overrides))


def test_defaults_fill_mha_and_head_dim():
    spec = llama_like()
    assert spec.num_kv_heads == 8
    assert spec.head_dim == 64 // 8
    assert spec.attention_kind == "MHA"


def test_gqa_and_mqa_are_named():
    assert llama_like(num_kv_heads=2).attention_kind == "GQA"
    assert llama_like(num_kv_heads=1).attention_kind == "MQA"


def test_explicit_head_dim_may_differ_from_hidden_over_heads():
    # Gemma-7B: 16 heads of 256 on a 3072-wide residual stream.
    spec = llama_like(hidden_size=3072, num_heads=16, head_dim=256)
    assert spec.q_dim == 4096


@pytest.mark.parametrize("kv", [3, 16, 0, -1])
def test_kv_heads_must_divide_heads(kv):
    with pytest.raises(SpecError) as e:
        llama_like(num_kv_heads=kv)
    assert e.value.field == "num_kv_heads"
    assert str(kv) in str(e.value)


def test_heads_must_divide_hidden_without_head_dim():
    with pytest.raises(SpecError, match="num_heads=7.*divisor of hidden_size"):
        llama_like(num_heads=7, num_kv_heads=7)


@pytest.mark.parametrize("field", ["num_layers", "hidden_size", "num_heads", "vocab_size",
                                   "ffn_size", "max_seq_len"])
@pytest.mark.parametrize("value", [0, -4])
def test_sizes_must_be_positive(field, value):
    with pytest.raises(SpecError) as e:
        llama_like(**{field: value})
    assert e.value.field == field
    assert "positive integer" in str(e.value)


def test_non_integer_size_is_refused():
    with pytest.raises(SpecError, match="hidden_size=64.5"):
        llama_like(hidden_size=64.5)


def test_unknown_ffn_kind_lists_the_allowed_ones():
    with pytest.raises(SpecError, match="ffn_kind='swish'.*mlp, gated"):
        llama_like(ffn_kind="swish")


def test_moe_top_k_cannot_exceed_experts():
    moe = MoESpec(num_experts=4, top_k=5, expert_ffn_size=32, moe_layers=(0, 1))
    with pytest.raises(SpecError, match="moe.top_k=5.*at most num_experts \\(4\\)"):
        llama_like(moe=moe)


def test_moe_layers_must_exist():
    moe = MoESpec(num_experts=4, top_k=2, expert_ffn_size=32, moe_layers=(0, 2))
    with pytest.raises(SpecError, match="moe.moe_layers=2"):
        llama_like(moe=moe)


def test_learned_positions_default_to_max_seq_len():
    spec = llama_like(position="learned", max_seq_len=1024)
    assert spec.learned_position_rows == 1024


def test_specs_are_immutable():
    spec = llama_like()
    with pytest.raises(AttributeError):
        spec.hidden_size = 128  # type: ignore[misc]

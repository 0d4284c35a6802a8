"""FLOPs conventions checked against arithmetic written out by hand."""

import pytest

from llmsizer import ModelSpec
from llmsizer.analysis.flops import attention_pairs, forward_ops, training_step_flops
from llmsizer.errors import SpecError
from llmsizer.formulas import flops_6NT, flops_megatron

TINY = ModelSpec("t", num_layers=2, hidden_size=64, num_heads=4, vocab_size=100, ffn_size=256,
                 ffn_kind="mlp", tie_embeddings=True)


def test_causal_pairs_are_the_lower_triangle():
    assert attention_pairs(4, 4, None, "causal") == 1 + 2 + 3 + 4
    assert attention_pairs(4, 4, None, "dense") == 16


def test_causal_pairs_for_new_tokens_after_a_prefix():
    # 2 new queries at positions 9 and 10 of a 10-token context.
    assert attention_pairs(2, 10, None, "causal") == 9 + 10
    assert attention_pairs(1, 10, None, "causal") == 10  # decode: one query, all keys


def test_sliding_window_caps_the_keys_per_query():
    # window 3: positions 1..6 see 1, 2, 3, 3, 3, 3 keys
    assert attention_pairs(6, 6, 3, "causal") == 1 + 2 + 3 + 3 + 3 + 3
    assert attention_pairs(2, 6, 3, "causal") == 3 + 3


def test_gpt_style_forward_written_out():
    b, s, h, f, V, L = 2, 16, 64, 256, 100, 2
    T = b * s
    per_layer = 2 * T * (3 * h * h + h * h + 2 * h * f) + 4 * b * s * s * h
    fwd = sum(o.forward for o in forward_ops(TINY, b, s))
    assert fwd == L * per_layer + 2 * T * h * V  # tied lm_head still multiplies


def test_backward_is_twice_forward_with_eager_attention():
    step = training_step_flops(TINY, 2, 16)
    assert step.backward == 2 * step.forward
    assert step.model_flops == step.hardware_flops == 3 * step.forward


def test_flash_backward_recomputes_scores():
    eager = training_step_flops(TINY, 2, 16, attention_backward="eager")
    flash = training_step_flops(TINY, 2, 16, attention_backward="flash")
    attn_fwd = 2 * (2 * 2 * 2 * 16 * 16 * 64)  # two layers of Q·Kᵀ and P·V
    assert flash.backward - eager.backward == attn_fwd // 2  # Q·Kᵀ again: half the forward
    assert flash.model_flops == eager.model_flops


def test_full_recompute_reruns_the_layers_forward_only():
    none = training_step_flops(TINY, 2, 16)
    full = training_step_flops(TINY, 2, 16, recompute="full")
    head = 2 * 32 * 64 * 100
    assert full.recomputation == none.forward - head
    assert full.model_flops == none.model_flops


def test_selective_recompute_reruns_attention_core_only():
    sel = training_step_flops(TINY, 2, 16, recompute="selective")
    assert sel.recomputation == 2 * (2 * 2 * 2 * 16 * 16 * 64)


def test_6NT_is_close_for_short_sequences():
    spec = ModelSpec("big", num_layers=32, hidden_size=4096, num_heads=32, vocab_size=32000,
                     ffn_size=16384, ffn_kind="mlp")
    from llmsizer import count_params

    n = count_params(spec).total
    step = training_step_flops(spec, 1, 128)
    assert abs(flops_6NT(n, 128).relative_error(step.model_flops)) < 0.02


def test_megatron_formula_is_exact_for_gpt_with_full_recompute():
    # Narayanan et al. eq. (3), 96·B·s·L·h²·(1 + s/6h + V/16Lh), counts layers 4× (forward,
    # recomputed forward, backward) and the logits 3×: exactly our hardware FLOPs for MHA + 4h FFN
    # with dense attention and full recomputation.
    spec = ModelSpec("gpt", num_layers=4, hidden_size=256, num_heads=8, vocab_size=1000,
                     ffn_size=1024, ffn_kind="mlp")
    step = training_step_flops(spec, 2, 128, recompute="full")
    assert flops_megatron(spec, 2, 128, recompute=True).value == pytest.approx(step.hardware_flops)


def test_bad_recompute_is_named():
    with pytest.raises(SpecError, match="recompute='partial'"):
        training_step_flops(TINY, 1, 8, recompute="partial")


def test_chunked_attention_pairs():
    # chunks of 3: positions 1..7 see 1, 2, 3, 1, 2, 3, 1 keys
    assert attention_pairs(7, 7, None, "causal", chunk=3) == 1 + 2 + 3 + 1 + 2 + 3 + 1
    # the last 2 queries (positions 6 and 7)
    assert attention_pairs(2, 7, None, "causal", chunk=3) == 3 + 1


def test_window_pairs_match_the_sum_they_replace():
    for seq, ctx, w in [(5, 9, 3), (9, 9, 4), (1, 100, 128), (300, 300, 128), (7, 7, 7)]:
        first = ctx - seq + 1
        assert attention_pairs(seq, ctx, w, "causal") == sum(min(p, w) for p in range(first,
                                                                                      ctx + 1))


def test_a_hundred_million_token_prompt_is_closed_form():
    # sum of 1..10^8 (a loop over positions once made this hang)
    assert attention_pairs(10**8, 10**8, None, "causal") == 10**8 * (10**8 + 1) // 2
    assert attention_pairs(10**8, 10**8, 4096, "causal") == 4096 * 4097 // 2 + (10**8 - 4096) * 4096

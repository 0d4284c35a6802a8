"""The literature's closed forms, checked against figures the sources themselves print."""

from llmsizer.formulas import params_12Lh2, params_12Lh2_Vh, params_seed001_approx
from llmsizer.specs.hf import spec_from_hf_config

LLAMA_7B = dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                num_attention_heads=32, num_hidden_layers=32, vocab_size=32000)


def test_seed001_llama_table_row_for_6_7b():
    # Seed 001's LLaMA table, row 6.7B: estimate 6,590,300,160 with (12·N·d² + d² + V·d) and
    # 6,442,450,944 without the input and output layers.
    spec = spec_from_hf_config(LLAMA_7B)
    assert params_seed001_approx(spec).value == 6_590_300_160
    assert params_12Lh2(spec).value == 6_442_450_944


def test_seed003_bloom_formula_lands_near_7b():
    # Seed 003 sec. 2.10: N = 12·L·H² + V·H for BLOOM-7B1 "differs little from 7B".
    spec = spec_from_hf_config(dict(model_type="bloom", n_embed=4096, n_layer=30, n_head=32,
                                    vocab_size=250880))
    ref = params_12Lh2_Vh(spec)
    assert ref.value == 12 * 30 * 4096**2 + 250880 * 4096
    assert abs(ref.relative_error(7_069_016_064)) < 0.01

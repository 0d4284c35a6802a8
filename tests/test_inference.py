"""Serving analysis: arithmetic worked out by hand and the seeds' worked questions."""

import json

import pytest

from llmsizer import count_params, get_accelerator, get_model
from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.inference import (
    ServingConfig,
    max_concurrency,
    serve,
    weight_bytes_per_device,
)
from llmsizer.analysis.kvcache import KVCache
from llmsizer.cli import main
from llmsizer.errors import SpecError
from llmsizer.specs.precision import weight_format

A800 = get_accelerator("a800")


def test_seed001_kv_cache_of_llama2_13b():
    # Seed 001's table: Llama 13B, b = 64, s = 512, n = 32, fp16: 4·b·L·h·(s + n) bytes, "~26GB".
    spec = get_model("llama-2-13b")
    b, s, n, L, h = 64, 512, 32, 40, 5120
    kv = KVCache(spec, 2).bytes_for(s + n, batch=b)
    assert kv == 4 * b * L * h * (s + n)
    assert kv / 2**30 == pytest.approx(26.56, abs=0.01)


def test_gqa_shrinks_the_kv_cache_by_heads_over_kv_heads():
    spec = get_model("llama-2-70b")
    assert KVCache(spec, 2).bytes_per_token == 2 * 80 * 8 * 128 * 2
    mha = 2 * 2 * 80 * 8192  # the MHA formula of seed 001, 4·L·h
    assert mha / KVCache(spec, 2).bytes_per_token == 64 / 8


def test_kv_heads_are_replicated_when_tp_exceeds_them():
    spec = get_model("llama-2-70b")  # 8 KV heads
    assert KVCache(spec, 2, tp=16).bytes_per_token == KVCache(spec, 2, tp=8).bytes_per_token


def test_paged_blocks_round_up_each_sequence():
    spec = get_model("llama-2-7b")
    exact = KVCache(spec, 2).bytes_for(17)
    paged = KVCache(spec, 2, block_size=16).bytes_for(17)
    assert paged == exact * 32 / 17


def test_int4_weights_count_their_group_scales():
    fmt = weight_format("int4")
    assert fmt.bytes_per_param() == 0.5 + 2.5 / 128
    spec = get_model("llama-2-7b")
    total = count_params(spec).total
    embed_and_head = 2 * 32000 * 4096
    norms = 65 * 4096
    linear = total - embed_and_head - norms
    expected = linear * (0.5 + 2.5 / 128) + (embed_and_head + norms) * 2
    assert weight_bytes_per_device(spec, ServingConfig(weights=fmt)) == pytest.approx(expected)


def test_seed003_concurrency_on_two_a800():
    # Seed 003: Llama-2-70B in fp16 on 2×A800, requests up to 4000 tokens: how many at once?
    spec = get_model("llama-2-70b")
    cfg = ServingConfig(tp=2, mem_util=1.0, runtime_overhead=0, block_size=None)
    weights = weight_bytes_per_device(spec, cfg)
    kv_request = 4000 * 2 * 80 * 4 * 128 * 2  # 4 of the 8 KV heads per rank
    from llmsizer.analysis.inference import workspace_bytes

    free = 80 * 2**30 - weights - workspace_bytes(spec, cfg)
    assert max_concurrency(spec, A800, cfg, 4000) == int(free // kv_request)
    # The MHA formula (64 KV heads) would leave room for 8× fewer.
    assert max_concurrency(spec, A800, cfg, 4000) >= 8


def test_decode_is_memory_bound_and_prefill_compute_bound():
    spec = get_model("llama-2-7b")
    r = serve(spec, get_accelerator("a100"), ServingConfig(), batch=1, prompt=2048, output=128)
    assert r.prefill.bound == "compute"
    assert r.decode.bound == "memory"
    # A decode step at batch 1 streams the weights at least once.
    weights = weight_bytes_per_device(spec, ServingConfig())
    bw = get_accelerator("a100").memory_bandwidth_bytes_s
    assert r.decode.compute_s >= weights / bw


def test_roofline_of_one_linear_worked_by_hand():
    # One 4096×4096 bf16 projection for one token: 2·4096² FLOPs, 2·4096² weight bytes plus
    # 2·(4096 + 4096) activation bytes; memory-bound on an A100.
    from llmsizer.analysis.inference import _linear_cost
    from llmsizer.graph import build_graph

    spec = get_model("llama-2-7b")
    op = build_graph(spec).layers[0].ops[1]  # q_proj
    eff = Efficiency()
    a100 = get_accelerator("a100")
    cost = _linear_cost(op, 0, 1, ServingConfig(), a100, 312e12, a100.memory_bandwidth_bytes_s, 2.0,
                        2.0, eff)
    nbytes = 2 * 4096 * 4096 + 2 * (4096 + 4096)
    assert cost.flops == 2 * 4096 * 4096
    assert cost.bytes == nbytes
    assert cost.bound == "memory"
    assert cost.time_s == pytest.approx(nbytes / (2039e9 * 0.85))


def test_e2e_is_ttft_plus_output_minus_one_tpots():
    r = serve(get_model("llama-2-7b"), A800, ServingConfig(), batch=4, prompt=512, output=64)
    assert r.e2e_latency_s == pytest.approx(r.ttft_s + 63 * r.tpot_s)
    assert r.throughput_tokens_per_s == pytest.approx(4 * 64 / r.e2e_latency_s)


@pytest.mark.parametrize("kwargs,field", [(dict(mem_util=1.5), "mem-util"),
                                          (dict(tp=0), "tp")])
def test_bad_serving_settings(kwargs, field):
    with pytest.raises(SpecError) as e:
        ServingConfig(**kwargs)
    assert e.value.field == field


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_infer_json_contract(capsys):
    code, out, _ = run(capsys, "infer", "llama-2-7b", "--gpu", "a100", "--batch", "8", "--json")
    assert code == 0
    data = json.loads(out)
    for key in ("weights_bytes_per_device", "kv_cache_bytes_per_token", "kv_cache_bytes",
                "max_concurrency", "ttft_s", "tpot_s", "e2e_latency_s",
                "throughput_tokens_per_s"):
        assert isinstance(data[key], (int, float)), key
    assert set(data["bound"]) == {"prefill", "decode"}
    assert data["kv_cache_bytes_per_token"] == 2 * 32 * 32 * 128 * 2


def test_infer_that_does_not_fit_names_what_would(capsys):
    code, out, _ = run(capsys, "infer", "llama-2-70b", "--gpu", "a100", "--prompt", "2000")
    assert code == 3  # computed, does not fit
    assert "DOES NOT FIT" in out
    assert "would fit: --tp 2" in out and "--weights int4" in out


def test_infer_sweep_lists_batches(capsys):
    _, out, _ = run(capsys, "infer", "llama-2-7b", "--gpu", "a100", "--sweep", "--json")
    sweep = json.loads(out)["sweep"]
    assert [s["batch"] for s in sweep[:3]] == [1, 2, 4]


@pytest.mark.parametrize("argv,expect", [
    (["--weights", "int3"], "weights='int3'"), (["--kv-dtype", "fp6"], "kv-dtype='fp6'"),
    (["--mem-util", "0"], "mem-util=0"), (["--tp", "3"], "tp=3"),
    (["--max-seq", "10"], "max-seq=10"), (["--block-size", "-1"], "block-size=-1"),
])
def test_infer_bad_input_is_one_line(capsys, argv, expect):
    code, _, err = run(capsys, "infer", "llama-2-7b", "--gpu", "a100", *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert expect in err


# ---- windows, latent caches, recurrent state, weight absorption (issue 9) ---------------------

def test_gemma2_kv_cache_at_32k_honours_the_windows():
    # Gemma-2-9B: 42 layers, alternating sliding (4,096) and full; 8 KV heads of 256, bf16:
    # 2·8·256·2 = 8,192 bytes per token and layer.
    spec = get_model("gemma-2-9b")
    per_layer = 2 * 8 * 256 * 2
    expected = 21 * 32768 * per_layer + 21 * 4095 * per_layer
    kv = KVCache(spec, 2)
    assert kv.bytes_for(32768) == expected
    # the naive figure (every layer keeps every token) is 1.78× too high
    assert 42 * 32768 * per_layer / kv.bytes_for(32768) == pytest.approx(1.78, abs=0.01)


def test_mla_engine_cache_is_the_latent_replicated_on_every_rank():
    # DeepSeek-V3: 61 layers × (512 latent + 64 rotary key) × 2 bytes = 70,272 bytes per token
    spec = get_model("deepseek-v3")
    assert KVCache(spec, 2).bytes_per_token == 61 * 576 * 2 == 70272
    assert KVCache(spec, 2, tp=8).bytes_per_token == 70272  # one latent "head": not split
    # up-projected per head: 128 heads × (192 key + 128 value), split over 8 ranks
    assert KVCache(spec, 2, tp=8, layout="expanded").bytes_per_token == 61 * 16 * 320 * 2


def test_recurrent_state_is_constant_in_sequence_length():
    spec = get_model("falcon3-mamba-7b-base")
    kv = KVCache(spec, 2)
    assert kv.bytes_per_token == 0
    assert kv.bytes_for(1000) == kv.bytes_for(100000) == kv.state_bytes_per_sequence > 0


def test_mla_weight_absorption_makes_long_context_decode_cheaper():
    spec = get_model("deepseek-v3")
    h200 = get_accelerator("h200")
    absorbed = serve(spec, h200, ServingConfig(tp=8), batch=8, prompt=16000, output=64)
    naive = serve(spec, h200, ServingConfig(tp=8, mla_absorb=False), batch=8, prompt=16000,
                  output=64)
    # without absorption kv_b_proj re-expands all 16k cached latents of every layer each step
    assert naive.decode.flops > 20 * absorbed.decode.flops
    assert naive.tpot_s > absorbed.tpot_s
    assert absorbed.ttft_s == naive.ttft_s  # prefill is the same either way

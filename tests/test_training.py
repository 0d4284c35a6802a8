"""Step time, throughput and MFU: bookkeeping checked by hand, and the seed's Llama 3 question."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsizer import ModelSpec, count_params, get_accelerator
from llmsizer.analysis.efficiency import Efficiency, matmul_efficiency
from llmsizer.analysis.flops import training_step_flops
from llmsizer.analysis.training import Cluster, train_step
from llmsizer.catalog import get_model
from llmsizer.report_training import achieved
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import optimizer, training_precision

MIXED, ADAM = training_precision("mixed"), optimizer("adam")
A100 = get_accelerator("a100")


def run(spec, seq=2048, **par):
    return train_step(spec, Parallelism(**par), MIXED, ADAM, seq, Cluster(A100))


def test_wave_quantization_of_a_gemm():
    # 108 SMs, 128×128 tiles: a 1280×1280 output is 100 tiles in one wave of 108 slots.
    eff = Efficiency(matmul_ceiling=1.0)
    assert matmul_efficiency(1280, 1280, eff, A100) == pytest.approx(100 / 108)
    # 129 rows need two tile rows, the second one 1/128 full.
    assert matmul_efficiency(129, 128, eff, A100) == pytest.approx(129 / 256 * (2 / 108))


def test_mfu_is_model_flops_over_time_gpus_and_peak():
    r = run(get_model("llama-2-7b"), dp=8, zero=1, grad_accum=4)
    # flash kernels (the default) compute the causal pairs, and so does the MFU numerator
    flops = training_step_flops(r.spec, r.par.global_batch, 2048,
                                attention_convention="causal").model_flops
    assert r.mfu == pytest.approx(flops / (r.time.total_s * 8 * 312e12))
    assert r.tokens_per_s == pytest.approx(32 * 2048 / r.time.total_s)
    assert 0 < r.mfu < 0.8  # cannot beat the matmul ceiling


def test_pipeline_bubble_is_pp_minus_one_micro_batches():
    r = run(get_model("llama-2-13b"), dp=2, pp=4, grad_accum=8)
    t_mb = r.time.compute_s / 8
    assert r.time.bubble_s == pytest.approx(3 * t_mb)
    inter = run(get_model("llama-2-13b"), dp=2, pp=4, grad_accum=8, schedule="interleaved",
                virtual_stages=2)
    assert inter.time.bubble_s == pytest.approx(1.5 * inter.time.compute_s / 8)


def test_tensor_parallel_adds_all_reduces():
    spec = get_model("llama-2-13b")
    assert run(spec, tp=1).time.tp_comm_s == 0
    assert run(spec, tp=8).time.tp_comm_s > 0


def test_recompute_raises_hardware_not_model_flops():
    spec = get_model("llama-2-7b")
    none, full = run(spec, dp=2, recompute="none"), run(spec, dp=2, recompute="full")
    assert full.step_flops.model_flops == none.step_flops.model_flops
    assert full.step_flops.hardware_flops > none.step_flops.hardware_flops
    assert full.time.total_s > none.time.total_s
    assert full.memory.peak.activations < none.memory.peak.activations


def test_llama3_seed_question_gpu_hours_to_mfu():
    # Seed 003: Llama 3 70B, 8K sequences, 15T tokens, 6.4M H100 GPU-hours at 989 TFLOPS: what
    # fraction of peak? With 6·N per token: 6·N·T / (GPU-hours·3600·989e12).
    spec = get_model("llama-3-70b")
    r = train_step(spec, Parallelism(dp=8), MIXED, ADAM, 8192, Cluster(get_accelerator("h100")))
    a = achieved(r, gpu_hours=6.4e6, tokens=15e12)
    n = count_params(spec).total
    assert a["mfu_6N"] == pytest.approx(6 * n * 15e12 / (6.4e6 * 3600 * 989.4e12))
    assert a["mfu_6N"] == pytest.approx(0.279, abs=0.001)
    assert a["mfu"] > a["mfu_6N"]  # attention at 8K adds ~14 %


@given(st.integers(1, 8), st.integers(1, 4))
@settings(max_examples=40, deadline=None)
def test_flops_scale_linearly_in_tokens_at_fixed_sequence(batch, factor):
    spec = ModelSpec("m", num_layers=2, hidden_size=64, num_heads=4, vocab_size=100, ffn_size=128)
    one = training_step_flops(spec, batch, 32)
    many = training_step_flops(spec, batch * factor, 32)
    assert many.model_flops == factor * one.model_flops
    assert many.hardware_flops == factor * one.hardware_flops


def test_zero3_moves_one_and_a_half_times_the_data_parallel_volume(monkeypatch):
    # Seed 002 / ZeRO paper sec. 7: ZeRO-3 adds a parameter all-gather in forward and backward to
    # the gradient reduce-scatter: 3Ψ per rank against 2Ψ for a plain all-reduce. (Volumes: NCCL's
    # per-collective latency, paid per layer by ZeRO-3, is switched off.)
    from llmsizer.analysis import comm, step

    monkeypatch.setattr(comm, "NCCL_BASE_LATENCY_S", 0.0)
    step.group_costs.cache_clear()
    spec = get_model("llama-2-13b")
    cluster = Cluster(A100, gpus_per_node=8)
    eff = Efficiency(collective_latency_s=0.0)

    def dp_time(zero):
        par = Parallelism(dp=8, zero=zero)
        return train_step(spec, par, MIXED, ADAM, 2048, cluster, eff,
                          dp_overlap=False).time.dp_comm_total_s

    assert dp_time(3) / dp_time(1) == pytest.approx(1.5)


def test_expert_all_to_all_is_four_exchanges_per_moe_layer():
    # Each MoE layer dispatches and combines tokens·top_k hidden vectors in forward and again in
    # backward: 4 all-to-alls of e·b·s·k·h bytes over the expert-parallel group.
    from llmsizer.analysis import comm

    spec = get_model("mixtral-8x7b")
    eff = Efficiency()
    cluster = Cluster(get_accelerator("h100"))
    par = Parallelism(dp=8, ep=8, zero=1, grad_accum=1)
    r = train_step(spec, par, MIXED, ADAM, 4096, cluster, eff)
    a2a = comm.all_to_all_s(2 * 1 * 4096 * 2 * 4096, 8, cluster.topology(eff).intra, eff)
    assert r.time.ep_comm_s == pytest.approx(32 * 4 * a2a)
    assert train_step(spec, Parallelism(dp=8, zero=1), MIXED, ADAM, 4096, cluster,
                      eff).time.ep_comm_s == 0


def test_context_parallel_exchange_is_hidden_behind_compute_when_it_can_be():
    # Ring attention passes K and V around the cp ranks; llmsizer exposes only what the layer's
    # forward compute does not cover. With a fast link nothing is exposed; with a slow one it is.
    spec = get_model("llama-3-8b")
    fast = Cluster(get_accelerator("h100"))
    slow = Cluster(get_accelerator("h100"), gpus_per_node=1, inter_node_bytes_s=1e9)
    par = Parallelism(dp=1, cp=4, grad_accum=1)
    eff = Efficiency()
    assert train_step(spec, par, MIXED, ADAM, 32768, fast, eff).time.cp_comm_s == 0
    assert train_step(spec, par, MIXED, ADAM, 32768, slow, eff).time.cp_comm_s > 0


def test_uneven_pipeline_stages_follow_the_split():
    # Llama 3 (Dubey et al. 2024, sec. 3.3.2): 126 layers on 16 stages, one layer fewer on the
    # first and the last: 7 + 14·8 + 7
    from llmsizer.analysis.params import stage_layers

    layers = stage_layers(126, 16, (7, 7))
    assert [len(s) for s in layers] == [7] + [8] * 14 + [7]
    assert [i for s in layers for i in s] == list(range(126))
    # without a split the remainder goes to the earlier stages
    assert [len(s) for s in stage_layers(126, 16)] == [8] * 14 + [7] * 2


def test_a_lighter_first_stage_holds_less():
    spec = get_model("llama-2-7b")
    cluster = Cluster(A100, gpus_per_node=8)

    def first_stage(split):
        par = Parallelism(pp=4, micro_batch=1, grad_accum=8, stage_split=split)
        return train_step(spec, par, MIXED, ADAM, 2048, cluster).memory.stages[0]

    even, light = first_stage(None), first_stage((5, 9))
    assert (even.layers, light.layers) == (8, 5)
    assert light.total < even.total


def test_a_split_that_leaves_a_stage_empty_is_refused(capsys):
    from llmsizer.cli import main

    assert main(["train", "llama-2-7b", "--gpu", "a100", "--pp", "4", "--first-stage-layers",
                 "20", "--last-stage-layers", "11", "--global-batch", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--first-stage-layers" in err[0]

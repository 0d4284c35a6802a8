"""The training time model's mechanisms against hand derivations and their cited sources
(issue 10): bucketed overlap, NCCL's hierarchical bus bandwidth, FP8 recipes, framework switches."""

import math

import pytest

from llmsizer.analysis import comm, frameworks
from llmsizer.analysis.cluster import Cluster
from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.training import train_step
from llmsizer.catalog import get_accelerator, get_model
from llmsizer.errors import SpecError
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import optimizer, training_precision


@pytest.mark.parametrize("g,t,nb,expected", [
    # one bucket: it is ready only when the compute ends, so all of it shows
    (4.0, 10.0, 1, 4.0),
    # 4 buckets of 1 s each after 2.5 s of compute each: each finishes under the next part of
    # the compute; only the last bucket's 1 s shows
    (4.0, 10.0, 4, 1.0),
    # communication longer than compute: the first bucket starts after T/nb, then G runs whole
    (20.0, 10.0, 5, 20.0 + 2.0 - 10.0),
    (0.0, 10.0, 5, 0.0),
])
def test_bucketed_overlap_matches_the_hand_timeline(g, t, nb, expected):
    assert float(frameworks.exposed(g, t, nb)) == pytest.approx(expected)


def test_a_group_across_nodes_runs_at_the_nics_it_owns():
    # 32 ranks on 4 nodes of 8: per-accelerator NIC rate = busbw·(k−1)/(n−1)
    # (stas00/ml-engineering network/README.md), so busbw = NIC·31/3, capped by NVLink's
    nic, nvlink = 50e9, 450e9
    topo = comm.Topology(8, comm.Link("nvlink", nvlink, 5e-6), comm.Link("nic", nic, 14e-6))
    assert topo.link_for(32, 1).effective_bytes_s == pytest.approx(min(nvlink, nic * 31 / 3))
    # one rank per node (stride 8): each rank's own NIC
    assert topo.link_for(16, 8).effective_bytes_s == pytest.approx(nic)
    # inside a node: NVLink
    assert topo.link_for(8, 1).effective_bytes_s == pytest.approx(nvlink)


def test_ring_latency_counts_network_steps_apart():
    # NCCL tuning.cc: base + (steps − inter steps)·intra + inter steps·network, per ring pass
    link = comm.Link("x", 1e12, 2e-6, nodes=4, inter_latency_s=10e-6)
    n = 32
    expected = comm.NCCL_BASE_LATENCY_S + (2 * (n - 1) - 2 * 4) * 2e-6 + 2 * 4 * 10e-6
    assert link.ring_latency(n, 2) == pytest.approx(expected)


def _step(precision: str, seq: int = 8192, **kw):
    acc = get_accelerator("h100")
    return train_step(get_model("llama-2-7b"), Parallelism(micro_batch=1, grad_accum=4),
                      training_precision(precision), optimizer("adam"), seq, Cluster(acc),
                      Efficiency.for_accelerator(acc), **kw)


def test_fp8_speeds_up_only_the_linear_products():
    # FP8 GEMMs run at most twice bf16's rate (H100: 1979 vs 989 TFLOP/s dense) and attention
    # stays in bf16 (Transformer Engine's default, torchao): the step gains less than 2x, and the
    # longer the sequence (the larger attention's share), the less it gains
    short = _step("mixed", 2048).time.compute_s / _step("fp8", 2048).time.compute_s
    long = _step("mixed", 16384).time.compute_s / _step("fp8", 16384).time.compute_s
    assert 1.0 < short < 2.0
    assert long < short


def test_current_scaling_costs_more_than_delayed():
    # current scaling reads each tensor once more for its amax before casting
    assert _step("fp8", fp8_recipe="current").time.compute_s > \
        _step("fp8", fp8_recipe="delayed").time.compute_s


def test_switches_turn_one_overlap_on_or_off():
    assert frameworks.profile("megatron+tp-comm-overlap").tp_comm_overlap
    assert not frameworks.profile("nemo-tp-comm-overlap").tp_comm_overlap
    assert frameworks.base_name("nemo-tp-comm-overlap") == "nemo"
    with pytest.raises(SpecError, match="framework"):
        frameworks.profile("megatron+warp-drive")


def _tp8_70b(framework: str):
    """Llama 2 70B at TP 8 with sequence parallelism on H100s, under `framework`: its time."""
    acc = get_accelerator("h100")
    par = Parallelism(tp=8, sequence_parallel=True, micro_batch=1, grad_accum=4)
    return train_step(get_model("llama-2-70b"), par, training_precision("mixed"),
                      optimizer("adam"), 4096, Cluster(acc), Efficiency.for_accelerator(acc),
                      framework=framework).time


def test_tp_overlap_hides_only_what_the_products_cover():
    plain, hidden = _tp8_70b("megatron"), _tp8_70b("megatron+tp-comm-overlap")
    assert hidden.tp_comm_total_s == pytest.approx(plain.tp_comm_total_s)
    assert 0 < hidden.tp_comm_s < plain.tp_comm_s == pytest.approx(plain.tp_comm_total_s)
    assert hidden.total_s < plain.total_s


def test_a_power_limit_slows_compute_by_the_cube_root_of_the_power_ratio():
    # P ∝ C·V²·f with V rising with f: (P_limit/P_rated)^(1/3). The law reproduces the H100 NVL
    # datasheet (400 W, 835 dense bf16 TFLOP/s) from the H100 SXM (700 W, 989) within 2 %.
    sxm, nvl = get_accelerator("h100-sxm-80gb"), get_accelerator("h100-nvl-94gb")
    assert pytest.approx(nvl.peak("bf16") / sxm.peak("bf16"), rel=0.02) == (400 / 700) ** (1 / 3)
    capped = get_accelerator("h100-sxm-96gb-hbm2e")  # torchtitan's Grand Teton H100s at 500 W
    assert capped.clock_ratio == pytest.approx((500 / 700) ** (1 / 3))
    assert capped.sustained_peak("bf16") == capped.peak("bf16") * capped.clock_ratio
    assert sxm.clock_ratio == 1.0  # no limit below the rated power
    from dataclasses import replace
    uncapped = replace(capped, power_limit_w=None)
    spec = get_model("llama-3.1-8b")
    args = (spec, Parallelism(dp=8, zero=1, micro_batch=2),
            training_precision("mixed"), optimizer("adam"), 8192)
    slow = train_step(*args, Cluster(capped), Efficiency.for_accelerator(capped))
    fast = train_step(*args, Cluster(uncapped), Efficiency.for_accelerator(uncapped))
    # the matrix products and attention slow by the clock; memory streams do not
    assert slow.time.compute_s > fast.time.compute_s
    assert slow.time.compute_s < fast.time.compute_s / capped.clock_ratio
    assert slow.mfu < fast.mfu and slow.peak_flops == fast.peak_flops  # MFU against the stated peak


def test_fsdp_shards_per_unit_not_per_bucket():
    # FSDP issues one all-gather and one reduce-scatter per wrapped unit (a transformer block);
    # DeepSpeed's ZeRO-2 reduces in 5e8-element buckets
    from llmsizer.analysis import step
    from llmsizer.analysis.layer_costs import Group

    spec = get_model("llama-2-7b")
    acc = get_accelerator("h100")
    for name, expected in (("fsdp2", spec.num_layers), ("deepspeed", 14)):
        st = step.Setting(spec, 4096, training_precision("mixed"), optimizer("adam"),
                          Cluster(acc), Efficiency.for_accelerator(acc), framework=name)
        costs = step.group_costs(st, (Group(tp=1, pp=1, dp=64, cp=1, ep=1, micro_batch=1,
                                            recompute="none", sequence_parallel=False,
                                            grad_accum=1),))
        assert costs.shard_buckets[0] == expected  # 6.7e9 params / 5e8 per bucket -> 14


def test_torchtitan_pipelines_keep_the_stage_gathered():
    # torchtitan: with PP, FSDP does not reshard after forward and gradients accumulate
    # unsharded in fp32 until the last micro-batch (torch.distributed.pipelining)
    spec = get_model("llama-3.1-70b")
    par = Parallelism(tp=8, pp=4, dp=8, zero=3, micro_batch=1, grad_accum=8,
                      sequence_parallel=True, recompute="full")
    args = (spec, par, training_precision("mixed"), optimizer("adam"), 8192,
            Cluster(get_accelerator("h100")))
    titan = train_step(*args, framework="torchtitan").memory.peak
    fsdp = train_step(*args, framework="fsdp2").memory.peak
    held = titan.params  # this stage's parameters on this rank
    assert titan.other_parts["ZeRO-3 gathered weights"] == pytest.approx(2 * held * 7 / 8,
                                                                        rel=0.01)
    assert titan.gradients == pytest.approx(4 * held, rel=0.01)
    assert fsdp.gradients < titan.gradients / 8


def test_moe_imbalance_gates_the_step_on_the_busiest_expert_rank():
    spec = get_model("qwen3-30b-a3b")
    acc = get_accelerator("h100")

    def step(imbalance, ep=8):
        r = train_step(spec, Parallelism(dp=16, ep=ep, zero=1, micro_batch=1, grad_accum=4),
                       training_precision("mixed"), optimizer("adam"), 4096, Cluster(acc),
                       moe_imbalance=imbalance)
        return r.time.compute_s, r.time.ep_comm_s

    (c1, a1), (c2, a2) = step(1.0), step(1.5)
    assert a2 == pytest.approx(1.5 * a1)  # the busiest rank sends and receives 1.5x
    assert c1 < c2 < 1.5 * c1  # only the routed experts' products grow
    # without expert parallelism every rank runs all experts on all its routed tokens
    assert step(1.5, ep=1) == step(1.0, ep=1)
    dense = get_model("llama-2-7b")
    times = [train_step(dense, Parallelism(dp=8), training_precision("mixed"), optimizer("adam"),
                        4096, Cluster(acc), moe_imbalance=f).time.total_s for f in (1.0, 2.0)]
    assert times[0] == times[1]
    with pytest.raises(SpecError):
        train_step(dense, Parallelism(dp=8), training_precision("mixed"), optimizer("adam"),
                   4096, Cluster(acc), moe_imbalance=float("nan"))


def test_frameworks_on_flashattention_2_run_attention_at_its_measured_speed():
    # torchtitan (PyTorch SDPA: FlashAttention-2 first) and llm-foundry (flash-attn 2) on
    # Hopper reach 370/648 of FlashAttention-3's throughput (FA3 paper, hdim 128, 16k)
    from llmsizer.analysis import step
    from llmsizer.analysis.layer_costs import _layer_time

    spec = get_model("llama-3.1-8b")

    def attention_s(gpu, framework):
        acc = get_accelerator(gpu)
        st = step.Setting(spec, 8192, training_precision("mixed"), optimizer("adam"),
                          Cluster(acc), Efficiency.for_accelerator(acc), framework=framework)
        return _layer_time(st, 0, 1, 1, 1, 1, False).attention_s

    hopper = Efficiency.for_accelerator(get_accelerator("h100"))
    assert hopper.fa2_attention_ratio == pytest.approx(370 / 648, abs=1e-3)
    assert attention_s("h100", "torchtitan") == pytest.approx(
        attention_s("h100", "megatron") / hopper.fa2_attention_ratio)
    assert attention_s("h100", "foundry") == attention_s("h100", "torchtitan")
    # on Ampere the measured kernel is FlashAttention-2 already
    assert attention_s("a100", "torchtitan") == attention_s("a100", "megatron")


@pytest.mark.parametrize("experts,k,hosts,groups,per_token", [
    (128, 8, 8, 1, 1),  # Qwen3-30B-A3B over 8 GPUs
    (256, 8, 32, 1, 1),  # DeepSeek-V3's experts over 32 GPUs, routing unlimited
    (256, 8, 4, 8, 4),  # ... over 4 nodes with its group-limited routing (4 of 8 groups)
    (32, 4, 64, 1, 1),  # fewer experts than hosts
])
def test_distinct_hosts_a_token_reaches_match_sampling(experts, k, hosts, groups, per_token):
    # the closed form (hypergeometric miss probability) against the routing itself on random
    # scores, as forced load balancing feeds it: the top `per_token` groups by the sum of their
    # two best scores (DeepSeek-V3's group-limited routing), then the top k experts among them
    import random

    rng = random.Random(7)
    per_group, per_host = experts // groups, max(1, experts // hosts)
    draws = 10_000
    total = 0
    for _ in range(draws):
        score = [rng.random() for _ in range(experts)]
        best = sorted(range(groups), key=lambda g: -sum(
            sorted(score[g * per_group:(g + 1) * per_group])[-2:]))[:per_token]
        pool = [g * per_group + i for g in best for i in range(per_group)]
        top = sorted(pool, key=lambda x: -score[x])[:k]
        total += len({x // per_host for x in top})
    assert comm.expected_hosts_hit(experts, k, hosts, groups, per_token) == pytest.approx(
        total / draws, rel=0.02)
    assert comm.expected_hosts_hit(experts, k, 1) == 1.0


def test_deduplicating_dispatch_sends_a_token_once_per_rank_and_node():
    nic, nvlink = 50e9, 900e9
    topo = comm.Topology(8, comm.Link("nvlink", nvlink, 5e-6), comm.Link("nic", nic, 14e-6))
    h_bytes, tokens = 7168 * 2, 4096
    # NCCL's all-to-all moves one copy per (token, expert): the plain all-to-all of k copies
    for ep in (8, 32):
        link = topo.link_for(ep, 1)
        assert comm.moe_dispatch_s(h_bytes, tokens, 8, 256, ep, link) == pytest.approx(
            comm.all_to_all_s(h_bytes * tokens * 8, ep, link))
    # across 4 nodes DeepEP's RDMA leg carries one copy per remote node a token reaches:
    # 3·(1 - C(6,4)/C(8,4)) with DeepSeek-V3's 4-of-8 group routing, two groups per node
    link = topo.link_for(32, 1)
    remote_nodes = 3 * (1 - 15 / 70)
    deepep = comm.moe_dispatch_s(h_bytes, tokens, 8, 256, 32, link, "deepep", 8, 4)
    assert deepep == pytest.approx(tokens * h_bytes * remote_nodes / nic + comm.NCCL_BASE_LATENCY_S
                                   + link.inter_latency_s)
    # never more than the all-to-all, inside a node or across nodes
    for ep in (2, 8, 16, 32, 64):
        link = topo.link_for(ep, 1)
        assert comm.moe_dispatch_s(h_bytes, tokens, 8, 256, ep, link, "hybridep") <= \
            comm.moe_dispatch_s(h_bytes, tokens, 8, 256, ep, link)


def test_expert_all_to_all_overlap_hides_it_under_the_other_micro_batch():
    spec = get_model("deepseek-v3")
    acc = get_accelerator("b200")

    def step(overlap, schedule="interleaved", v=2, accum=32, dispatcher="alltoall"):
        par = Parallelism(dp=32, pp=8, ep=32, zero=1, micro_batch=1, grad_accum=accum,
                          recompute="selective", schedule=schedule, virtual_stages=v)
        return train_step(spec, par, training_precision("mixed"), optimizer("adam"), 4096,
                          Cluster(acc), framework="nemo", moe_a2a_overlap=overlap,
                          moe_dispatcher=dispatcher).time

    off, on = step(False), step(True)
    assert on.compute_s == off.compute_s
    assert on.ep_comm_total_s == pytest.approx(off.ep_comm_s)  # the same traffic
    assert on.ep_comm_s < off.ep_comm_s
    # hand timeline: stage 0 of an interleaved schedule (pp 8, v 2) runs 2·7 + 1·8 = 22 chunks
    # of 1/2 micro-batch without a partner; the other micro-batches' all-to-all shows only
    # where it exceeds the partner's compute
    t_mb = on.compute_s / 32
    ep_mb = off.ep_comm_s / (32 + 7 / 2)
    alone = 11.0
    expected = 7 / 2 * ep_mb + alone * ep_mb + (32 - alone) * max(0.0, ep_mb - t_mb)
    assert on.ep_comm_s == pytest.approx(expected)
    assert on.hidden()["expert all-to-all"] == (pytest.approx(off.ep_comm_s),
                                                pytest.approx(on.ep_comm_s))
    # deduplication moves less and so shows less
    assert step(True, dispatcher="deepep").ep_comm_s < on.ep_comm_s
    with pytest.raises(SpecError, match="moe_a2a_overlap"):
        train_step(spec, Parallelism(dp=32, pp=8, ep=32), training_precision("fp8"),
                   optimizer("adam"), 4096, Cluster(acc), framework="fsdp2",
                   moe_a2a_overlap=True)
    with pytest.raises(SpecError, match="moe_dispatcher"):
        train_step(spec, Parallelism(dp=32, pp=8, ep=32), training_precision("fp8"),
                   optimizer("adam"), 4096, Cluster(acc), moe_dispatcher="nccl")


# ---- kernel launches (issue 10: many small kernels keep fine-grained MoE off the roofline) ----

def _layer(model: str, index: int = 0):
    from llmsizer.graph import build_graph

    spec = get_model(model)
    return spec, build_graph(spec).layers[index]


def test_a_dense_layer_launches_its_ops_once_forward_and_gemms_twice_backward():
    from llmsizer.analysis.efficiency import KERNELS_PER_LAYER_EXTRA
    from llmsizer.analysis.op_costs import layer_kernels

    # Llama: norms, q/k/v, attention, o, gate/up/down. Forward: 7 GEMMs + 1 fused attention +
    # the norm op + the layer's element-wise extras; backward: 2 GEMMs each (data, weight),
    # FlashAttention's 3 kernels, the norm's and the extras'
    _, layer = _layer("llama-2-7b")
    extra = KERNELS_PER_LAYER_EXTRA
    assert layer_kernels(layer, False, 1, False, True, "alltoall", False) == (
        7 + 1 + 1 + extra, 14 + 3 + 1 + extra)
    # FP8: one cast per distinct input forward (q/k/v share one, gate/up one: 4 of 7 products)
    # and one per product's output gradient backward
    assert layer_kernels(layer, False, 1, True, True, "alltoall", False) == (
        7 + 4 + 1 + 1 + extra, 21 + 3 + 1 + extra)
    # unfused attention: QK^T, softmax, dropout, AV forward; six kernels backward
    assert layer_kernels(layer, False, 1, False, True, "alltoall", True) == (
        7 + 4 + 1 + extra, 14 + 6 + 1 + extra)
    # whole-layer CUDA graphs launch nothing per kernel
    assert layer_kernels(layer, False, 1, False, True, "alltoall", False, "full") == (0, 0)


def test_experts_launch_one_gemm_each_under_transformer_engine_and_one_grouped_kernel_else():
    from llmsizer.analysis.op_costs import ROUTING_KERNELS, layer_kernels

    spec, layer = _layer("qwen3-30b-a3b")
    assert spec.moe is not None and spec.is_moe_layer(0)
    local = spec.moe.num_experts // 8  # 128 experts over EP 8
    per, grouped = (layer_kernels(layer, True, 8, False, pe, "alltoall", False)
                    for pe in (True, False))
    # gate, up and down products: 3 GEMMs forward, 6 backward, per local expert vs once
    assert per[0] - grouped[0] == 3 * (local - 1)
    assert per[1] - grouped[1] == 6 * (local - 1)
    # routing kernels (Megatron-Core's fused router: 31; DeepEP's router + preprocessing: 17)
    deepep = layer_kernels(layer, True, 8, False, True, "deepep", False)
    assert per[0] - deepep[0] == ROUTING_KERNELS["alltoall"] - ROUTING_KERNELS["deepep"] == 14
    # a graph of the router and its preprocessing removes the router product and the routing
    graphed = layer_kernels(layer, True, 8, False, True, "alltoall", False, "moe_router")
    assert per[0] - graphed[0] == 1 + ROUTING_KERNELS["alltoall"]
    assert per[1] - graphed[1] == 2 + ROUTING_KERNELS["alltoall"]


def test_launch_overhead_adds_kernels_times_their_cost_to_the_step():
    from dataclasses import replace

    from llmsizer.analysis.op_costs import layer_kernels
    from llmsizer.graph import build_graph

    acc = get_accelerator("h100")
    spec = get_model("llama-2-7b")
    base = Efficiency.for_accelerator(acc)
    par = Parallelism(micro_batch=1, grad_accum=4)

    def total(overhead: float, graphs: str = "none") -> float:
        eff = replace(base, kernel_overhead_s=overhead)
        return train_step(spec, par, training_precision("mixed"), optimizer("adam"), 4096,
                          Cluster(acc), eff, cuda_graphs=graphs).time.compute_s

    f, b = layer_kernels(build_graph(spec).layers[0], False, 1, False, True, "alltoall", False)
    per_kernel = 20e-6
    expected = 4 * spec.num_layers * (f + b) * per_kernel  # 4 micro-batches, every layer
    assert total(per_kernel) - total(0.0) == pytest.approx(expected, rel=1e-9)
    # graphed layers pay none of it
    assert total(per_kernel, "full") == pytest.approx(total(0.0), rel=1e-12)
    with pytest.raises(SpecError, match="cuda_graphs"):
        total(per_kernel, "everything")


def test_narrow_heads_run_attention_at_the_measured_head_dim_ratio():
    # FlashAttention-3 causal forward at 16k on H100: 473 TFLOP/s at head dim 64, 616 at 128,
    # 642 at 256 (Shah et al. 2024, Fig. 5); FlashAttention-2: 324 vs 370 (non-causal);
    # FlashAttention-4 on GB300: 1243 vs 1882 (flash-attention PR #2605)
    from llmsizer.analysis.efficiency import generation_efficiency

    hopper, blackwell = generation_efficiency("hopper"), generation_efficiency("blackwell")
    assert hopper.head_dim_factor(64) == pytest.approx(473 / 616, abs=2e-3)
    assert hopper.head_dim_factor(64, fa2=True) == pytest.approx(324 / 370, abs=2e-3)
    assert blackwell.head_dim_factor(64) == pytest.approx(1243 / 1882, abs=2e-3)
    for eff in (hopper, blackwell):
        assert eff.head_dim_factor(128) == 1.0
        assert eff.head_dim_factor(256) == 1.0  # capped: 256 gains only 4 % over 128
        assert eff.head_dim_factor(64) < eff.head_dim_factor(96) < 1.0
    # no dependence where a generation states none
    assert Efficiency().head_dim_factor(64) == 1.0
    with pytest.raises(SpecError, match="attention_half_head_dim"):
        Efficiency(attention_half_head_dim=-1)


# pytorch/ao PR #2185: bf16 nn.Linear forward + backward on H100 (torch.compile), Llama-70B shapes
# (M, K, N) and milliseconds
_AO_2185_BF16 = [((16384, 8192, 1280), 1.954), ((16384, 1024, 8192), 1.701),
                 ((16384, 8192, 7168), 9.871), ((16384, 3584, 8192), 5.192)]


def test_shallow_products_run_at_the_measured_depth_ratio():
    """The step model prices a linear's backward as twice its forward, so all three products
    run at the forward's reduction depth K; with Hopper's depth term their summed times match
    the measured ratios between the four shapes of pytorch/ao PR #2185 within 6 % (without it,
    the K = 1024 shape is 10 % off)."""
    from llmsizer.analysis.efficiency import generation_efficiency

    hopper = generation_efficiency("hopper")

    def model(eff):
        return [3 * 2 * m * k * n / eff.depth_factor(k) for (m, k, n), _ in _AO_2185_BF16]

    def worst_ratio_error(times):
        # the throughput that fits best (least squares of the log errors), then the worst row
        logs = [math.log(ms / t) for t, (_, ms) in zip(times, _AO_2185_BF16, strict=True)]
        mean = sum(logs) / len(logs)
        return max(abs(x - mean) for x in logs)

    assert worst_ratio_error(model(hopper)) < 0.065
    assert worst_ratio_error(model(Efficiency())) > 0.09  # no depth term: K = 1024 misses
    # the ceiling is reached at the depth it was measured at (MAMF's best H100 shape, K = 13312)
    # and never exceeded; FP8 products lose twice the elements to the fixed cost
    assert hopper.depth_factor(13312) == pytest.approx(1.0)
    assert hopper.depth_factor(65536) == 1.0
    assert hopper.depth_factor(512) == pytest.approx(512 / 692 * 13492 / 13312)
    assert hopper.depth_factor(1024, "fp8") == pytest.approx(1024 / 1384 * 14696 / 14336)
    assert Efficiency().depth_factor(128) == 1.0
    with pytest.raises(SpecError, match="matmul_half_k"):
        Efficiency(matmul_half_k=-1)


def test_attention_time_scales_by_the_head_dim_factor():
    from dataclasses import replace

    from llmsizer.analysis import step
    from llmsizer.analysis.layer_costs import _layer_time

    acc = get_accelerator("h100")
    spec = get_model("llama-3.1-8b")
    # the same attention FLOPs in twice as many heads of half the width
    narrow = replace(spec, num_heads=64, num_kv_heads=16, head_dim=64)
    eff = Efficiency.for_accelerator(acc)

    def attention_s(s):
        st = step.Setting(s, 8192, training_precision("mixed"), optimizer("adam"),
                          Cluster(acc), eff)
        return _layer_time(st, 0, 1, 1, 1, 1, False).attention_s

    # forward: FLOPs over the efficiency (the Q/K/V/O bytes are far below the roofline ridge)
    assert attention_s(narrow) == pytest.approx(attention_s(spec) / eff.head_dim_factor(64),
                                                rel=1e-9)


def test_scatter_gather_splits_pipeline_hand_offs_over_the_tensor_parallel_ranks():
    # Megatron-LM 2021-22 (Narayanan et al. 2021 sec. 4.1): each TP rank sends 1/t of the
    # activation across the pipeline, the receiving stage all-gathers it over NVLink
    from llmsizer.analysis import step

    acc = get_accelerator("a100-sxm-80gb")
    spec = get_model("llama-2-7b")

    def p2p(framework, sp=False):
        st = step.Setting(spec, 2048, training_precision("mixed"), optimizer("adam"),
                          Cluster(acc), Efficiency.for_accelerator(acc), framework=framework)
        return step._p2p_s(st, 4, 8, 1, 1, 1, sp), st

    whole, st = p2p("megatron")
    split, _ = p2p("megatron+p2p-scatter-gather")
    act = 2 * 2048 * spec.hidden_size
    link = st.topology.link_for(4, 8)
    assert whole == pytest.approx(2 * comm.p2p_s(act, link))
    assert split == pytest.approx(2 * (comm.p2p_s(act / 8, link) + comm.all_gather_s(
        act, 8, st.topology.link_for(8, 1))))
    assert split < whole
    # with sequence parallelism the activation is split already: nothing to gather
    assert p2p("megatron+p2p-scatter-gather", sp=True)[0] == p2p("megatron", sp=True)[0]


def test_unfused_elementwise_ops_move_what_the_eager_code_moves():
    # torchtitan without torch.compile: RMSNorm 9x, rotary 5x, SwiGLU 10/6 of the fused bytes
    # (op_costs.EAGER_ELEMENTWISE, counted from torchtitan@9dec370's modules); residual adds
    # unchanged
    from llmsizer.analysis import step
    from llmsizer.analysis.layer_costs import _layer_time

    acc = get_accelerator("h100")

    def elementwise_s(spec, framework):
        st = step.Setting(spec, 8192, training_precision("mixed"), optimizer("adam"),
                          Cluster(acc), Efficiency.for_accelerator(acc), framework=framework)
        return _layer_time(st, 0, 1, 1, 1, 1, False).elementwise_s

    llama = get_model("llama-3.1-8b")  # h 4096, ffn 14336, q 4096, kv 1024, 2 RMSNorms
    h, ffn, qkv = 4096, 14336, 4096 + 1024
    fused = 6 * h + 2 * 2 * h + 3 * ffn + 2 * qkv
    eager = 6 * h + 2 * 2 * h * 9 + 3 * ffn * 10 / 6 + 2 * qkv * 5
    assert elementwise_s(llama, "torchtitan") == pytest.approx(
        elementwise_s(llama, "torchtitan+compile") * eager / fused, rel=1e-9)
    assert elementwise_s(llama, "torchtitan+compile") == elementwise_s(llama, "megatron")
    assert elementwise_s(llama, "fsdp2") == elementwise_s(llama, "torchtitan")
    # LayerNorm and a plain activation are one kernel each in eager PyTorch too, and learned
    # positions have no rotary: OPT moves the same either way
    opt = get_model("opt-175b")
    assert elementwise_s(opt, "fsdp2") == elementwise_s(opt, "fsdp2+compile")


@pytest.mark.parametrize("model,shared", [
    # Llama: k/v read q's input, up reads gate's; o and down read what came before them
    ("llama-2-7b", {"k_proj", "v_proj", "up_proj"}),
    # gpt-oss: the experts' down projection is as wide as up (2880) but reads its output
    ("gpt-oss-120b", {"k_proj", "v_proj", "up_proj"}),
    # MLA's down-projections read the same hidden state but not one after the other: not marked
    ("deepseek-v3", {"up_proj"}),
])
def test_products_reading_one_tensor_are_marked_in_the_graph(model, shared):
    _, layer = _layer(model, -1)
    assert {op.name for op in layer.ops if op.shares_input} == shared


def test_fp8_casts_a_shared_input_once_and_a_gathered_one_on_its_shard():
    from llmsizer.analysis.op_costs import FP8_CAST_BYTES, fp8_cast_bytes

    _, layer = _layer("llama-2-7b")
    ops = {op.name: op for op in layer.ops}
    tokens, h, tp = 4096, 4096, 8
    per = FP8_CAST_BYTES["tensorwise"]
    # sequence parallel, tensorwise: the column-parallel input is cast on the rank's 1/tp of the
    # sequence before the all-gather; the output gradient (q's 4096/8 columns) in full
    f, b = fp8_cast_bytes(ops["q_proj"], tokens, tp, 1, "tensorwise", True)
    assert f == pytest.approx(per * tokens * h / tp)
    assert b == pytest.approx(per * tokens * h / tp)
    # torchtitan gathers rowwise runs in bf16 and casts the gathered input
    f, _ = fp8_cast_bytes(ops["q_proj"], tokens, tp, 1, "rowwise", True)
    assert f == pytest.approx(FP8_CAST_BYTES["rowwise"] * tokens * h)
    # k reads q's input: nothing more to cast forward
    f, _ = fp8_cast_bytes(ops["k_proj"], tokens, tp, 1, "tensorwise", True)
    assert f == 0
    # a row-parallel product's input is the rank's own shard already: no change
    f, _ = fp8_cast_bytes(ops["o_proj"], tokens, tp, 1, "tensorwise", True)
    assert f == pytest.approx(per * tokens * h / tp)


def test_rowwise_scaling_rescales_the_backward_products_outputs_after_them():
    """torchao's row-wise recipe runs the backward products on cuBLAS's tensorwise kernel with
    unit scales and multiplies each bf16 output by the scales after (addmm_float8_unwrapped):
    one read and one write of the input gradient (tokens × in-features) and of the weight
    gradient (in × out features), on top of casting the output gradient. Row- and column-wise
    copies each take their own amax pass: 8 bytes an element, 2 more than tensorwise."""
    from llmsizer.analysis.op_costs import FP8_CAST_BYTES, fp8_cast_bytes

    _, layer = _layer("llama-2-7b")
    ops = {op.name: op for op in layer.ops}
    tokens, h, tp = 4096, 4096, 8
    # without sequence parallelism q's input is whole on every rank; its output is h/tp wide
    _, tensorwise = fp8_cast_bytes(ops["q_proj"], tokens, tp, 1, "tensorwise", False)
    assert tensorwise == pytest.approx(6 * tokens * h / tp)
    _, rowwise = fp8_cast_bytes(ops["q_proj"], tokens, tp, 1, "rowwise", False)
    grad_input, grad_weight = tokens * h, h * h / tp
    assert FP8_CAST_BYTES["rowwise"] == 8.0
    assert rowwise == pytest.approx(8 * tokens * h / tp + 4 * (grad_input + grad_weight))
    # the recipes whose products scale inside the GEMM add nothing after it
    for recipe in ("delayed", "current", "tensorwise", "blockwise", "mxfp8"):
        _, b = fp8_cast_bytes(ops["q_proj"], tokens, tp, 1, recipe, False)
        assert b == pytest.approx(FP8_CAST_BYTES[recipe] * tokens * h / tp)


@pytest.mark.parametrize("precision,recipe,recompute,expected", [
    # in all-reduces of the activation: 2 forward (reduce-scatter + all-gather each) and 2
    # backward; FP8 gathers move 1 byte of 2, so a forward all-reduce's worth costs 3/4
    ("mixed", "delayed", "selective", (2.0, 2.0)),
    ("fp8", "tensorwise", "selective", (1.5, 2.0)),
    ("fp8", "delayed", "full", (3.0, 2.0)),
    ("fp8", "rowwise", "selective", (2.0, 2.0)),
])
def test_fp8_runs_gather_their_cast_inputs_at_one_byte(precision, recipe, recompute, expected):
    from llmsizer.analysis.layer_costs import tp_passes

    run = _setting(precision, recipe)
    assert tp_passes(run, 8, True, recompute) == pytest.approx(expected)
    # without sequence parallelism there is no all-gather of inputs to shrink
    assert tp_passes(run, 8, False, "none") == pytest.approx((2.0, 2.0))


@pytest.mark.parametrize("precision,recipe,expected", [
    # the forward's two all-gathers (one all-reduce's worth) run again in the recomputation
    ("mixed", "delayed", (3.0, 2.0)),
    # tensorwise FP8 gathers at one byte: half of that
    ("fp8", "tensorwise", (2.0, 2.0)),
])
def test_torchtitan_per_op_recomputation_gathers_again(precision, recipe, expected):
    # torchtitan's per-op policy saves reduce_scatter_tensor outputs but not all-gather ones
    # (models/llama3/parallelize_llama.py _save_list @ 820504e), so they are recomputed
    from dataclasses import replace

    from llmsizer.analysis.layer_costs import tp_passes

    run = replace(_setting(precision, recipe), framework="torchtitan+compile")
    assert tp_passes(run, 8, True, "selective") == pytest.approx(expected)
    # Megatron's selective recomputation (the attention core) gathers nothing again
    assert tp_passes(_setting(precision, recipe), 8, True, "selective")[0] == pytest.approx(
        expected[0] - (1.0 if precision == "mixed" else 0.5))
    # full recomputation repeats the whole forward either way
    assert tp_passes(run, 8, True, "full")[0] == pytest.approx(
        2 * tp_passes(_setting(precision, recipe), 8, True, "selective")[0])


def _setting(precision: str, recipe: str):
    from llmsizer.analysis import step

    acc = get_accelerator("h100")
    return step.Setting(get_model("llama-2-7b"), 4096, training_precision(precision),
                        optimizer("adam"), Cluster(acc), Efficiency.for_accelerator(acc),
                        fp8_recipe=recipe)


def test_async_tp_hides_the_forward_communication_only():
    # PyTorch's async TP (torchtitan): forward ~29 % faster, step ~8 % (PyTorch dev-discuss,
    # 2024): the backward's TP communication stays exposed; Transformer Engine's userbuffers
    # overlap both passes
    assert not frameworks.profile("torchtitan").tp_overlap_backward
    assert frameworks.profile("nemo").tp_overlap_backward
    plain = _tp8_70b("torchtitan+compile")
    async_tp = _tp8_70b("torchtitan+compile+tp-comm-overlap")
    userbuffers = _tp8_70b("megatron+tp-comm-overlap")
    # selective recomputation: half of it is the forward's (2 all-reduces of 4)
    assert async_tp.tp_comm_s > plain.tp_comm_total_s / 2
    assert async_tp.tp_comm_s < plain.tp_comm_s
    assert userbuffers.tp_comm_s < async_tp.tp_comm_s / 2


def test_async_tp_leaves_the_gathers_serial_under_rowwise_fp8_scales():
    # pytorch/pytorch#149990: with row-wise scales torch.compile's micro-pipeline pass fuses the
    # matmul-reduce-scatters but not the all-gather-matmuls
    assert frameworks.async_tp_fuses_gathers("fp8", "tensorwise")
    assert frameworks.async_tp_fuses_gathers("bf16", "rowwise")
    assert not frameworks.async_tp_fuses_gathers("fp8", "rowwise")
    acc = get_accelerator("h100")
    par = Parallelism(tp=8, sequence_parallel=True, micro_batch=1, grad_accum=4,
                      recompute="full")

    def tp(framework: str, recipe: str):
        return train_step(get_model("llama-2-70b"), par, training_precision("fp8"),
                          optimizer("adam"), 4096, Cluster(acc), Efficiency.for_accelerator(acc),
                          framework=framework, fp8_recipe=recipe).time

    plain, rowwise = tp("torchtitan+compile", "rowwise"), \
        tp("torchtitan+compile+tp-comm-overlap", "rowwise")
    assert rowwise.tp_comm_total_s == pytest.approx(plain.tp_comm_total_s)
    # full recomputation, bf16 gathers (row-wise casts after gathering): forward 2 scatters +
    # 2 gathers, backward 2, in halves of an all-reduce each; only the scatters (2 of 6) hide
    assert rowwise.tp_comm_s >= plain.tp_comm_total_s * 4 / 6 * (1 - 1e-9)
    assert rowwise.tp_comm_s < plain.tp_comm_s
    # tensor-wise scales: the gathers (FP8, one byte) fuse too
    tensorwise = tp("torchtitan+compile+tp-comm-overlap", "tensorwise")
    total = tp("torchtitan+compile", "tensorwise").tp_comm_total_s
    assert tensorwise.tp_comm_s / total < rowwise.tp_comm_s / plain.tp_comm_total_s


def _deepspeed_train_schedule(micro_batches: int, stages: int, stage: int):
    """The instruction stream of one stage under DeepSpeed's TrainSchedule
    (deepspeed/runtime/pipe/schedule.py): 2·(m + p − 1) steps, forward on even stages at even
    steps, a send and a receive before each step's compute, one after the other."""
    def step_to_micro_batch(step):
        if step % 2 == 0 and stage % 2 == 0:
            return step // 2 - stage // 2, True
        if step % 2 == 1 and stage % 2 == 1:
            return (step - 1) // 2 - stage // 2, True
        if step % 2 == 0:
            return step // 2 - stages + (stage + 1) // 2, False
        return (step - 1) // 2 - stages + 1 + stage // 2, False

    def valid(mb):
        return 0 <= mb < micro_batches

    ops, prev = [], -1
    for step in range(2 * (micro_batches + stages - 1)):
        mb, forward = step_to_micro_batch(step)
        if forward and stage > 0:
            if valid(prev):
                ops.append(("send", stage - 1, ("grad", prev)))
            if valid(mb):
                ops.append(("recv", stage - 1, ("act", mb)))
        elif not forward and stage < stages - 1:
            if valid(mb):
                ops.append(("recv", stage + 1, ("grad", mb)))
            if valid(prev):
                ops.append(("send", stage + 1, ("act", prev)))
        if valid(mb):
            ops.append(("F" if forward else "B",))
        prev = mb
    return ops


def _blocking_pipeline_makespan(micro_batches, stages, f, b, transfer):
    """Every send waits for its peer's receive and both take `transfer` (NCCL send/recv)."""
    ops = [_deepspeed_train_schedule(micro_batches, stages, s) for s in range(stages)]
    at, clock = [0] * stages, [0.0] * stages
    moved = True
    while moved:
        moved = False
        for s in range(stages):
            while at[s] < len(ops[s]):
                op = ops[s][at[s]]
                if op[0] in ("F", "B"):
                    clock[s] += f if op[0] == "F" else b
                    at[s] += 1
                    moved = True
                    continue
                kind, peer, tag = op
                other = ops[peer][at[peer]] if at[peer] < len(ops[peer]) else None
                if (other is None or other[0] not in ("send", "recv") or other[0] == kind
                        or other[1] != s or other[2] != tag):
                    break
                clock[s] = clock[peer] = max(clock[s], clock[peer]) + transfer
                at[s] += 1
                at[peer] += 1
                moved = True
    assert at == [len(o) for o in ops]  # no deadlock: every instruction ran
    return max(clock)


@pytest.mark.parametrize("micro_batches,stages,transfer", [(240, 35, 0.02), (128, 12, 0.05)])
def test_deepspeed_pipeline_puts_four_transfers_per_micro_batch_on_the_critical_path(
        micro_batches, stages, transfer):
    # MT-NLG's (35 stages, 240 micro-batches) and BLOOM's (12, 128) shapes, the backward with
    # full recomputation 3x the forward; without transfers the schedule is exactly 1F1B
    f, b = 1.0, 3.0
    slots = micro_batches + stages - 1
    assert _blocking_pipeline_makespan(micro_batches, stages, f, b, 0.0) == slots * (f + b)
    extra = _blocking_pipeline_makespan(micro_batches, stages, f, b, transfer) - slots * (f + b)
    assert 3.5 * transfer < extra / slots <= 4 * transfer
    assert frameworks.profile("deepspeed").p2p_transfers == 4
    assert frameworks.profile("megatron").p2p_transfers == 2


def test_hidden_collectives_slow_the_compute_beside_them_by_the_measured_share():
    # Lee et al. 2025 (arXiv:2507.03114): overlapped compute runs 18.9 % slower on average, so
    # it loses 0.189/1.189 of its speed for as long as the hidden collective runs
    from dataclasses import replace

    spec, acc = get_model("llama-2-7b"), get_accelerator("h100")
    par = Parallelism(dp=64, zero=3, micro_batch=1, grad_accum=2)
    base = Efficiency.for_accelerator(acc)
    assert base.overlap_slowdown == pytest.approx(0.189 / 1.189)

    def step(eff: Efficiency, framework: str = "fsdp2"):
        return train_step(spec, par, training_precision("mixed"), optimizer("adam"), 4096,
                          Cluster(acc), eff, framework=framework).time

    with_, without = step(base), step(replace(base, overlap_slowdown=0.0))
    hidden = with_.dp_comm_total_s - with_.dp_comm_exposed_s
    assert hidden > 0 and without.contention_s == 0
    assert with_.contention_s == pytest.approx(base.overlap_slowdown * hidden)
    assert with_.total_s == pytest.approx(without.total_s + with_.contention_s)
    # nothing hidden, nothing lost: without overlap every collective shows in full
    serial = train_step(spec, par, training_precision("mixed"), optimizer("adam"), 4096,
                        Cluster(acc), base, framework="fsdp2", dp_overlap=False).time
    assert serial.contention_s == 0
    with pytest.raises(SpecError, match="overlap_slowdown"):
        Efficiency(overlap_slowdown=1.0)


def test_unfused_attention_runs_as_two_batched_products_and_a_softmax_pass():
    # Unfused attention (Megatron-LM of 2021, eager transformers) is Q·Kᵀ and P·V as batched
    # products per head, priced like any product, with the softmax's read and write of the full
    # square of scores between them: the flash kernels' measured efficiency does not apply.
    from dataclasses import replace

    from llmsizer.analysis import step
    from llmsizer.analysis.efficiency import gemm_efficiency, op_time
    from llmsizer.analysis.layer_costs import _layer_time
    from llmsizer.graph import Gemm

    acc = get_accelerator("a100-sxm-80gb")
    spec = get_model("llama-2-7b")
    eff = Efficiency.for_accelerator(acc)
    seq, mb, e = 2048, 2, 2

    def attention_s(efficiency, attention="eager"):
        st = step.Setting(spec, seq, training_precision("mixed"), optimizer("adam"),
                          Cluster(acc), efficiency, attention=attention)
        return _layer_time(st, 0, 1, 1, 1, mb, False).attention_s

    eager = attention_s(eff)
    # the flash kernels' efficiency moves flash attention, not the unfused kernels
    slower = replace(eff, attention_efficiency=eff.attention_efficiency / 2)
    assert attention_s(slower) == pytest.approx(eager, rel=1e-12)
    assert attention_s(slower, "flash") > 1.9 * attention_s(eff, "flash")
    # by hand: the two products (each bounded by its own traffic) and the softmax's two passes
    heads, d = spec.num_heads, spec.head_dim
    scores = mb * heads * seq * seq
    qkvo = e * mb * seq * 2 * heads * 2 * d
    peak, bw = acc.sustained_peak("bf16"), acc.memory_bandwidth_bytes_s
    by_hand = sum(op_time(g.flops, e * scores + qkvo / 2, peak, bw,
                          gemm_efficiency(g, eff, acc), eff)
                  for g in (Gemm(seq, d, seq, mb * heads), Gemm(seq, seq, d, mb * heads)))
    by_hand += 2 * e * scores / (bw * eff.memory_ceiling)
    assert eager == pytest.approx(by_hand, rel=1e-9)

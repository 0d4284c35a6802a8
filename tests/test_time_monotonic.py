"""Physics the time model must respect (issue 10): a part with more of everything is never slower.

Efficiency factors belong to a chip *generation*; a SKU gets no fitted factor of its own. So two
SKUs of one generation differ only in their datasheet peaks, bandwidths and links — and, where a
SKU's own maximum achievable matmul throughput was measured apart from the generation's reference
part (catalog `measured_matmul`: GB200, B300, H200's FP8, MI325X), in that measurement — and
raising any peak or bandwidth can never raise a predicted time. The rankings that per-SKU fits
used to produce (H800 faster than H100, A800 slower than A100 on compute-bound work, H200 1.19x
faster than H100 with the same compute) are checked by name, and the general rule over random
layouts.
"""

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llmsizer.analysis.cluster import Cluster
from llmsizer.analysis.efficiency import Efficiency, generation_of
from llmsizer.analysis.training import train_step
from llmsizer.catalog import get_accelerator, get_model
from llmsizer.errors import SpecError
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import optimizer, training_precision

MIXED, ADAM = training_precision("mixed"), optimizer("adam")


def step_s(model: str, gpu, par: Parallelism, seq: int = 4096, gpus_per_node: int = 8,
           nic: float | None = None, framework: str = "megatron", precision=MIXED) -> float:
    acc = get_accelerator(gpu) if isinstance(gpu, str) else gpu
    cluster = Cluster(acc, gpus_per_node=gpus_per_node, inter_node_bytes_s=nic)
    return train_step(get_model(model), par, precision, ADAM, seq, cluster,
                      Efficiency.for_accelerator(acc), framework=framework).time.total_s


LAYOUTS = [
    ("llama-2-7b", Parallelism(dp=8, zero=1, micro_batch=1, grad_accum=8)),
    ("llama-2-70b", Parallelism(dp=4, tp=8, pp=2, zero=1, sequence_parallel=True,
                                micro_batch=1, grad_accum=16)),
    ("llama-2-13b", Parallelism(dp=64, zero=3, micro_batch=2, grad_accum=1)),
    ("mixtral-8x7b", Parallelism(dp=16, ep=8, tp=2, zero=1, micro_batch=1, grad_accum=4)),
]


@pytest.mark.parametrize("model,par", LAYOUTS, ids=[m for m, _ in LAYOUTS])
def test_sibling_skus_rank_as_their_datasheets(model, par):
    # H800 and A800 are H100 and A100 with less NVLink (400 GB/s): never faster
    assert step_s(model, "h800-sxm-80gb", par) >= step_s(model, "h100", par)
    assert step_s(model, "a800-sxm-80gb", par) >= step_s(model, "a100-sxm-80gb", par)
    # H200 is H100 with more HBM bandwidth: never slower, and only its memory-bound work gains
    h100, h200 = step_s(model, "h100", par), step_s(model, "h200", par)
    assert h200 <= h100
    assert h200 >= 0.8 * h100


def test_h200_gains_nothing_on_compute_bound_work():
    # A large dense model at long sequence is dominated by big GEMMs: same compute, same time
    # within what the memory-bound kernels (norms, activations, optimizer) account for.
    par = Parallelism(dp=1, tp=8, zero=0, sequence_parallel=True, micro_batch=1, grad_accum=8)
    h100, h200 = step_s("llama-2-70b", "h100", par), step_s("llama-2-70b", "h200", par)
    assert 0.9 * h100 <= h200 <= h100


def test_skus_share_their_generations_factors():
    for a, b in (("h100", "h800-sxm-80gb"), ("h100", "h200"), ("a100-sxm-80gb", "a800-sxm-80gb"),
                 ("b200", "gb200"), ("b200", "gb300")):
        ea, eb = (Efficiency.for_accelerator(get_accelerator(x)) for x in (a, b))
        assert generation_of(get_accelerator(a)) == generation_of(get_accelerator(b))
        assert (ea.attention_efficiency, ea.memory_ceiling, ea.comm_efficiency) == (
            eb.attention_efficiency, eb.memory_ceiling, eb.comm_efficiency)
    # no measurement of its own: the generation's matmul ceiling
    for a, b in (("h100", "h800-sxm-80gb"), ("a100-sxm-80gb", "a800-sxm-80gb"), ("b200", "gb300")):
        ea, eb = (Efficiency.for_accelerator(get_accelerator(x)) for x in (a, b))
        assert (ea.matmul_ceiling, ea.fp8_matmul_ceiling) == (eb.matmul_ceiling,
                                                              eb.fp8_matmul_ceiling)


def test_a_sku_measured_apart_runs_at_its_own_measured_matmul_throughput():
    # MAMF (stas00/ml-engineering compute/accelerator/README.md): B200 1745.0 of 2250 dense
    # bf16 TFLOP/s, GB200 1822.0 of 2500; the fitted fraction of a whole step is the generation's
    from llmsizer.analysis.efficiency import generation_efficiency

    b200, gb200 = get_accelerator("b200"), get_accelerator("gb200")
    eb, eg = Efficiency.for_accelerator(b200), Efficiency.for_accelerator(gb200)
    blackwell = generation_efficiency("blackwell")
    scale = eb.matmul_ceiling / blackwell.matmul_ceiling
    assert blackwell.matmul_ceiling * 2250 == pytest.approx(1745.0, abs=1.5)
    assert eg.matmul_ceiling == pytest.approx(scale * 1822.0 / 2500)
    assert eg.fp8_matmul_ceiling == pytest.approx(scale * 3615.6 / 5000)
    # GB200's measured matmul throughput is below its datasheet's 1.11x over B200, above B200's
    assert eb.matmul_ceiling * 2250 < eg.matmul_ceiling * 2500 < 1.11 * eb.matmul_ceiling * 2250
    # so GB200 still never trains slower than B200
    for model, par in LAYOUTS:
        assert step_s(model, "gb200", par) <= step_s(model, "b200", par)


def _faster(acc, what: str, factor: float):
    """`acc` with one datasheet figure raised by `factor`."""
    if what == "peak":
        return replace(acc, peak_flops={k: v * factor for k, v in acc.peak_flops.items()})
    if what == "hbm":
        return replace(acc, memory_bandwidth_bytes_s=acc.memory_bandwidth_bytes_s * factor)
    if what == "nvlink":
        return replace(acc, intra_node_link_bytes_s=acc.intra_node_link_bytes_s * factor)
    raise AssertionError(what)


@given(model=st.sampled_from(["llama-2-7b", "mixtral-8x7b", "qwen3-30b-a3b", "gpt2-xl"]),
       gpu=st.sampled_from(["a100-sxm-80gb", "h100", "b200", "mi300x"]),
       tp=st.sampled_from([1, 2, 8]), pp=st.sampled_from([1, 2, 4]),
       dp=st.sampled_from([1, 2, 16, 64]), zero=st.sampled_from([0, 1, 3]),
       mb=st.sampled_from([1, 4]), accum=st.sampled_from([1, 8]),
       recompute=st.sampled_from(["none", "selective", "full"]),
       framework=st.sampled_from(["megatron", "nemo", "deepspeed", "fsdp2"]),
       precision=st.sampled_from(["mixed", "fp8"]),
       what=st.sampled_from(["peak", "hbm", "nvlink", "nic"]),
       factor=st.sampled_from([1.01, 1.5, 3.0]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_raising_any_peak_or_bandwidth_never_raises_a_predicted_time(
        model, gpu, tp, pp, dp, zero, mb, accum, recompute, framework, precision, what, factor):
    acc = get_accelerator(gpu)
    prec = training_precision(precision)
    if prec.compute_dtype not in acc.peak_flops:
        return
    try:
        par = Parallelism(dp=dp, tp=tp, pp=pp, zero=zero, micro_batch=mb, grad_accum=accum,
                          recompute=recompute, sequence_parallel=tp > 1)
        base = step_s(model, acc, par, seq=2048, nic=25e9, framework=framework, precision=prec)
    except SpecError:
        event("layout refused")
        return  # a layout the model cannot take (heads not divisible, …)
    event("compared")
    if what == "nic":
        faster = step_s(model, acc, par, seq=2048, nic=25e9 * factor, framework=framework,
                        precision=prec)
    else:
        faster = step_s(model, _faster(acc, what, factor), par, seq=2048, nic=25e9,
                        framework=framework, precision=prec)
    assert faster <= base * (1 + 1e-12)


def test_a_gb200_rack_is_one_nvlink_domain():
    # GB200 NVL72: 72 GPUs behind NVLink switches (nvidia.com/en-us/data-center/gb200-nvl72):
    # by default a 64-GPU data-parallel group stays on NVLink, where 8-GPU nodes would send it
    # over the NICs
    acc = get_accelerator("gb200")
    assert acc.nvlink_domain == 72 and get_accelerator("b200").nvlink_domain == 8
    par = Parallelism(dp=64, zero=1, micro_batch=1, grad_accum=1)
    rack = step_s("llama-2-13b", acc, par, gpus_per_node=acc.nvlink_domain)
    nodes = step_s("llama-2-13b", acc, par, gpus_per_node=8)
    assert rack < nodes


@given(model=st.sampled_from(["qwen3-30b-a3b", "mixtral-8x7b", "deepseek-v2-lite"]),
       gpu=st.sampled_from(["h100", "b200"]), ep=st.sampled_from([8, 16, 32]),
       dp=st.sampled_from([32, 64]), pp=st.sampled_from([1, 4]),
       interleaved=st.booleans(), accum=st.sampled_from([1, 8, 32]),
       dispatcher=st.sampled_from(["alltoall", "deepep", "hybridep"]), overlap=st.booleans(),
       what=st.sampled_from(["peak", "hbm", "nvlink", "nic"]),
       factor=st.sampled_from([1.01, 1.5, 3.0]))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_moe_dispatch_and_all_to_all_overlap_keep_faster_parts_faster(
        model, gpu, ep, dp, pp, interleaved, accum, dispatcher, overlap, what, factor):
    # the expert all-to-all's dispatchers and its overlap under the partner micro-batch: more of
    # anything never raises a step, hiding never costs more than running serially, and a
    # deduplicating dispatcher never moves more than NCCL's all-to-all
    acc = get_accelerator(gpu)
    interleaved = interleaved and pp > 1

    def step(acc, nic=25e9, dispatcher=dispatcher, overlap=overlap):
        par = Parallelism(dp=dp, pp=pp, ep=ep, zero=1, micro_batch=1, grad_accum=accum,
                          schedule="interleaved" if interleaved else "1f1b",
                          virtual_stages=2 if interleaved else 1)
        return train_step(get_model(model), par, MIXED, ADAM, 2048,
                          Cluster(acc, gpus_per_node=8, inter_node_bytes_s=nic),
                          Efficiency.for_accelerator(acc), framework="nemo",
                          moe_dispatcher=dispatcher, moe_a2a_overlap=overlap).time.total_s

    try:
        base = step(acc)
    except SpecError:
        event("layout refused")
        return
    event("compared")
    faster = step(acc, nic=25e9 * factor) if what == "nic" else step(_faster(acc, what, factor))
    assert faster <= base * (1 + 1e-12)
    if overlap:
        assert base <= step(acc, overlap=False) * (1 + 1e-12)
    assert step(acc, dispatcher="deepep") <= step(acc, dispatcher="alltoall") * (1 + 1e-12)

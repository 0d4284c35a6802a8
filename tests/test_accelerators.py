"""Accelerator figures: the tensor-core peak follows from the microarchitecture."""

import pytest

from llmsizer import get_accelerator
from llmsizer.catalog import list_accelerators


def test_a800_peak_is_seed_003s_derivation():
    # Seed 003 sec. 1.3: 2·(8·4·8) FLOPs per tensor core per clock · 4 tensor cores · 108 SMs
    # · 1410 MHz = 311.8 TFLOPS, "about 312".
    a800 = get_accelerator("A800")
    assert a800.derived_peak_flops == 2 * (8 * 4 * 8) * 4 * 108 * 1410e6
    assert a800.peak("bf16") == 312e12


def test_h100_sxm_peak_from_sms_and_clock():
    # H100 whitepaper: 132 SMs, 4 fourth-generation tensor cores each, 1024 dense FP16 FLOPs per
    # tensor core per clock; 989.4 dense TFLOPS at 1830 MHz.
    h100 = get_accelerator("h100")
    assert h100.derived_peak_flops == pytest.approx(132 * 4 * 1024 * 1830e6)
    assert h100.peak("bf16") == pytest.approx(989.4e12)


@pytest.mark.parametrize("acc", list_accelerators(), ids=lambda a: a.name)
def test_derived_peak_agrees_with_the_datasheet(acc):
    if acc.derived_peak_flops is None:
        pytest.skip("microarchitecture figures not public")
    stated = acc.peak_flops.get("bf16") or acc.peak_flops["fp16"]
    assert acc.derived_peak_flops == pytest.approx(stated, rel=0.005)


def test_a100_ridge_point_matches_seed_001():
    # Seed 001: A100 312e12 FLOP/s over ~300e9... uses 1.5-2 TB/s HBM; with the 80 GB SXM
    # datasheet's 2,039 GB/s the ridge is 312e12 / 2.039e12 = 153 FLOP/byte.
    assert get_accelerator("a100-80gb").ridge_point_flops_per_byte == pytest.approx(153.0, abs=0.1)


def test_binary_and_decimal_memory_are_kept_apart():
    # nvidia-smi shows 81920 MiB for the A100 80GB: the datasheet's "80 GB" is 80 GiB.
    assert get_accelerator("a100-80gb").memory_bytes == 81920 * 2**20


# --- catalog extension: Blackwell/Blackwell Ultra, MI355X, inference and consumer cards, TPUs,
# Gaudi 3, Ascend 910C, the Meta H100 HBM2e part; memory units stated consistently ---------------

import json  # noqa: E402
from importlib import resources  # noqa: E402

NEW_ENTRIES = ["gb200", "b300", "gb300", "mi355x", "l4", "a10g", "t4", "rtx5090", "rtx3090",
               "rtx-a6000", "tpu-v5e", "tpu-v5p", "tpu-v6e", "gaudi3", "910c", "h100-96gb-hbm2e",
               "h100-nvl"]


def _raw_entries():
    text = resources.files("llmsizer.catalog").joinpath("data", "accelerators.json").read_text()
    return json.loads(text)


@pytest.mark.parametrize("name", NEW_ENTRIES)
def test_new_entries_load_with_a_dense_16_bit_peak(name):
    acc = get_accelerator(name)
    assert acc.sources and acc.notes
    assert acc.peak("bf16" if "bf16" in acc.peak_flops else "fp16") > 0
    assert acc.memory_bytes > 0 and acc.memory_bandwidth_bytes_s > 0


@pytest.mark.parametrize("name,sms,tcs,per_clock,mhz,datasheet_tflops", [
    # NVIDIA L4 datasheet: 242 TFLOPS FP16 with sparsity -> 121 dense; Ada whitepaper: 58 SMs,
    # 232 tensor cores, 2040 MHz; datacenter Ada does 256 dense FP16 FLOPs/TC/clock.
    ("l4", 58, 4, 256, 2040, 242 / 2),
    # T4 datasheet: 65 TFLOPS mixed precision; 40 SMs x 8 Turing TCs x 64 FMA x 2 at 1590 MHz.
    ("t4", 40, 8, 128, 1590, 65),
    # RTX A6000 datasheet: 309.7 TFLOPS tensor with sparsity -> 154.85; 336 TCs = 84 SMs x 4.
    ("rtx-a6000", 84, 4, 256, 1800, 309.7 / 2),
    # GA102 whitepaper, RTX 3090: 71 TFLOPS BF16 with FP32 accumulate (GeForce half rate).
    ("rtx3090", 82, 4, 128, 1695, 71),
    # RTX Blackwell whitepaper, RTX 5090: 419 FP16 (FP16 acc) -> 209.5 with FP32 accumulate.
    ("rtx5090", 170, 4, 128, 2407, 419 / 2),
    # MI355X: 8 XCDs x 32 CUs, 8192 FP8 FLOPs/clk/CU (ISSCC 2026) -> 4096 BF16, 2.4 GHz; AMD 2.5 PF.
    ("mi355x", 8 * 32, 4, 8192 // 2 // 4, 2400, 2500),
])
def test_derived_peak_matches_the_datasheet_within_2_percent(name, sms, tcs, per_clock, mhz,
                                                            datasheet_tflops):
    acc = get_accelerator(name)
    derived = sms * tcs * per_clock * mhz * 1e6
    assert acc.derived_peak_flops == pytest.approx(derived)
    assert derived == pytest.approx(datasheet_tflops * 1e12, rel=0.02)
    key = "bf16" if "bf16" in acc.peak_flops else "fp16"
    assert acc.peak(key) == pytest.approx(datasheet_tflops * 1e12, rel=0.02)


@pytest.mark.parametrize("name,tflops", [
    ("gb200", 10_000 / 2 / 2),   # GB200 superchip: 10 PF BF16 with sparsity, 2 GPUs
    ("b300", 36_000 / 2 / 8),    # HGX B300: 36 PF BF16 with sparsity, 8 GPUs
    ("gb300", 360_000 / 2 / 72),  # GB300 NVL72: 360 PF dense FP8 per 72 GPUs; BF16 is half
    ("tpu-v5e", 197), ("tpu-v5p", 459), ("tpu-v6e", 918),  # Google: dense bf16 per chip
    ("gaudi3", 1835),  # Intel: BF16 matrix (MME), no sparsity
])
def test_dense_bf16_peaks_follow_from_the_vendor_figures(name, tflops):
    assert get_accelerator(name).peak("bf16") == pytest.approx(tflops * 1e12, rel=0.005)


@pytest.mark.parametrize("raw", _raw_entries(), ids=lambda r: r["name"])
def test_every_entry_sources_peak_memory_and_bandwidth(raw):
    for key in ("peak_tflops", "memory", "bandwidth"):
        assert len(raw["sources"].get(key, "")) > 10, (raw["name"], key)


@pytest.mark.parametrize("raw", _raw_entries(), ids=lambda r: r["name"])
def test_memory_units_match_the_notes(raw):
    unit, value = raw["memory"]["unit"], raw["memory"]["value"]
    note = raw.get("memory_note", "")
    if "GiB" in note:
        assert unit == "GiB", f"{raw['name']}: note says GiB, unit is {unit}"
    nominal = value * {"GB": 10**9, "GiB": 2**30}[unit]
    if raw.get("memory_bytes"):
        # what the device reports is the fitted capacity less a reserve: at most 7 % below
        assert 0.93 * nominal <= raw["memory_bytes"] <= nominal, raw["name"]
    # the datasheet's wording stays visible
    assert get_accelerator(raw["name"]).memory_stated


def test_datasheet_gb_that_is_gib():
    # nvidia-smi: B200 183359 MiB is more than 180 * 10**9 bytes, so "180GB" is GiB.
    assert 183359 * 2**20 > 180 * 10**9
    assert get_accelerator("b200").memory_bytes == 183359 * 2**20
    # the RTX 3090 reports exactly 24576 MiB = 24 GiB; V100 32GB is four 8 GiB HBM2 stacks.
    assert get_accelerator("rtx3090").memory_bytes == 24 * 2**30
    assert get_accelerator("v100").memory_bytes == 32 * 2**30
    assert get_accelerator("h200").memory_bytes == 141 * 2**30
    assert get_accelerator("a100-80gb").memory_stated.startswith("80GB")


def test_ascend_910b_parts_take_their_own_generations_measured_ceilings():
    # Ascend 910B/910C (Da Vinci cores) are a generation of their own: a mamf-finder search on a
    # 910B2C found 322.5 bf16 TFLOP/s of the 376 the catalog takes for the 910B2
    # (gameofdimension/gpu_benchmark@1103b99), not the 'other' generation's assumed 0.75
    from llmsizer.analysis.efficiency import generation_of, generation_table, measured_efficiency

    ascend = generation_table()["ascend"]
    assert "matmul_ceiling" in ascend["sources"] and "matmul_ceiling" not in ascend["assumed"]
    for name in ("ascend-910b2", "ascend-910b3", "ascend-910c"):
        acc = get_accelerator(name)
        assert generation_of(acc) == "ascend"
        assert measured_efficiency(acc).matmul_ceiling == ascend["efficiency"]["matmul_ceiling"]
    b2 = get_accelerator("ascend-910b2")
    assert b2.peak("bf16") * measured_efficiency(b2).matmul_ceiling == pytest.approx(322.5e12,
                                                                                    rel=2e-3)

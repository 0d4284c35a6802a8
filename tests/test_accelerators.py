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

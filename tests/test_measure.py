"""`llmsizer measure`: the closed loop on this machine's CPU at tiny scale.

A 2-layer Llama-like model, 2 processes on gloo: kernels measured → calibration and device file
written → the step predicted with them → the step measured with real DDP → the error reported.
Skipped where torch or transformers is not installed (the `measure` extra).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llmsizer.cli import main  # noqa: E402

# A Llama-like decoder small enough for a step in a fraction of a second on one core, large
# enough that its GEMMs, not Python, dominate the step.
TINY = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 256,
        "intermediate_size": 704, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 2048, "max_position_embeddings": 1024, "tie_word_embeddings": False}
RUN = ["--micro-batch", "2", "--seq", "256", "--nproc", "2", "--device", "cpu", "--quiet"]
# Below this share of its core a worker was timed while other programs ran on it: the timing
# measures their load, not the device (see llmsizer.measure.runtime.cpu_share).
QUIET_SHARE = 0.8
# Closed loops per run and timed steps per loop (a step takes ~0.15 s here; a loop ~10 s).
LOOPS, STEPS = 5, 10


def _cli(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "llmsizer", "measure", *args, "--json"],
                         capture_output=True, text=True, timeout=300,
                         env=os.environ | {"PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("measure")
    cfg = d / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    cal, dev = d / "cal.json", d / "device.json"
    kernels = _cli("kernels", "--model", str(cfg), "-o", str(cal), "--gpu-out", str(dev), *RUN)
    train = _cli("train", str(cfg), "--gpu", str(dev), "--calibration", str(cal), "--steps",
                 str(STEPS), *RUN)
    # More independent closed loops (kernels measured anew, step measured anew): on a small
    # shared machine one loop's error swings by ±20 % with the neighbours' load, so the accuracy
    # target is judged on the median of LOOPS loops' errors, as a measurement would be repeated.
    errors = [train["relative_error"]]
    for k in range(LOOPS - 1):
        cal_k, dev_k = d / f"cal{k}.json", d / f"device{k}.json"
        _cli("kernels", "--model", str(cfg), "-o", str(cal_k), "--gpu-out", str(dev_k), *RUN)
        errors.append(_cli("train", str(cfg), "--gpu", str(dev_k), "--calibration", str(cal_k),
                           "--steps", str(STEPS), *RUN)["relative_error"])
    median = {key: sorted(e[key] for e in errors)[LOOPS // 2] for key in errors[0]}
    return {"kernels": kernels, "train": train, "cal": cal, "dev": dev, "cfg": cfg,
            "median_error": median, "errors": errors}


def test_kernels_write_files_llmsizer_reads(loop: dict) -> None:
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.catalog import get_accelerator

    acc = get_accelerator(str(loop["dev"]))
    eff = Efficiency.for_accelerator(acc, calibration=str(loop["cal"]), workload="training")
    written = json.loads(loop["cal"].read_text())
    assert written["gpu"] == acc.name and acc.name.startswith("cpu-measured-")
    assert eff.matmul_ceiling == written["matmul_ceiling"]
    for name in ("matmul_ceiling", "attention_efficiency", "memory_ceiling", "comm_efficiency"):
        assert 0 < written[name] <= 1


def test_measured_cpu_peak_is_physically_possible(loop: dict) -> None:
    from llmsizer.catalog import get_accelerator

    acc = get_accelerator(str(loop["dev"]))
    threads = loop["kernels"]["measured"]["threads"]
    # An x86 core retires at most 2 FMA instructions of 16 fp32 lanes (AVX-512) per cycle
    # = 64 FLOP/cycle; no shipping CPU core clocks above 6.2 GHz.
    assert 1e9 < acc.peak_flops["fp32"] < threads * 64 * 6.2e9
    # a process's share of host RAM
    assert acc.memory_bytes <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_collectives_measured_on_gloo(loop: dict) -> None:
    rows = loop["kernels"]["measured"]["collectives"]
    timed = {r["op"] for r in rows if "seconds" in r}
    assert {"all_reduce", "p2p"} <= timed
    assert all(r["seconds"] > 0 for r in rows if "seconds" in r)


def test_train_json_contract(loop: dict) -> None:
    t = loop["train"]
    for side in ("measured", "predicted"):
        assert t[side]["step_time_s"] > 0 and math.isfinite(t[side]["step_time_s"])
        assert isinstance(t[side]["peak_memory_bytes"], int) and t[side]["peak_memory_bytes"] > 0
    assert {"step_time_s", "peak_memory_bytes"} <= set(t["relative_error"])
    m, p = t["measured"]["step_time_s"], t["predicted"]["step_time_s"]
    assert t["relative_error"]["step_time_s"] == pytest.approx((p - m) / m)
    assert len(t["measured"]["step_times_s"]) == STEPS


def test_activation_bytes_match_what_torch_saves_for_backward(loop: dict) -> None:
    t = loop["train"]
    assert t["predicted"]["activation_bytes"] == pytest.approx(
        t["measured"]["saved_activation_bytes"], rel=0.01)


def _repeatable(loop: dict, key: str) -> None:
    """Skip when the loops disagree by more than the tolerance itself: such a machine
    cannot tell a 20 % error from its own noise (the numbers are in the skip message). The
    fastest and slowest loop are left out of the spread, as they are of the median."""
    errors = [e[key] for e in loop["errors"]]
    middle = sorted(errors)[1:-1]
    if max(middle) - min(middle) > 0.20:
        pytest.skip(f"{key}: {LOOPS} closed loops disagree by more than 20 points "
                    f"({', '.join(f'{e:+.1%}' for e in errors)}): too noisy to judge 20 %")


def test_prediction_within_20_percent_of_the_steps_cpu_time(loop: dict) -> None:
    # The kernels were timed in CPU time per thread; the step's CPU time is the same clock, and
    # holds on a machine shared with other programs (issue 15's target: within 20 %).
    _repeatable(loop, "step_cpu_time_s")
    assert abs(loop["median_error"]["step_cpu_time_s"]) <= 0.20, loop["errors"]


def test_prediction_within_20_percent_of_the_wall_clock_step(loop: dict) -> None:
    shares = (loop["kernels"]["measured"]["cpu_share"], loop["train"]["measured"]["cpu_share"])
    _repeatable(loop, "step_time_s")
    err = loop["median_error"]["step_time_s"]
    if min(shares) < QUIET_SHARE:
        pytest.skip(f"CPU shared with other programs while timing (share of core: kernels "
                    f"{shares[0]:.2f}, train {shares[1]:.2f}); wall-clock error was {err:+.1%}")
    assert abs(err) <= 0.20


def test_infer_reports_ttft_and_tpot(loop: dict) -> None:
    r = _cli("infer", str(loop["cfg"]), "--gpu", str(loop["dev"]), "--calibration",
             str(loop["cal"]), "--prompt", "64", "--output", "4", "--steps", "1", "--warmup", "1",
             "--device", "cpu", "--quiet")
    for side in ("measured", "predicted"):
        assert r[side]["ttft_s"] > 0 and r[side]["tpot_s"] > 0
    assert set(r["relative_error"]) == {"ttft_s", "tpot_s", "peak_memory_bytes"}


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_missing_torch_is_one_line_with_the_install_command(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    code, err = _exit(["measure", "kernels", "--device", "cpu"], capsys)
    assert code == 2 and "\n" not in err
    assert "pip install torch==2.13.0 && pip install 'llmsizer[measure]'" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_cuda_device_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit(["measure", "kernels", "--device", "cuda"], capsys)
    assert code == 2 and "--device=cuda" in err and "\n" not in err


@pytest.mark.parametrize("argv, named", [
    (["measure", "train", "gpt2", "--device", "cpu", "--strategy", "zero9"], "--strategy"),
    (["measure", "train", "gpt2", "--device", "cpu", "--nproc", "0"], "--nproc"),
    (["measure", "train", "gpt2", "--device", "cpu"], "--gpu"),
    (["measure", "kernels", "--device", "cpu", "--nproc", "4096"], "--nproc"),
    (["measure", "kernels", "--device", "cpu", "--model", "no-such-model"], "no-such-model"),
    (["measure", "kernels", "--device", "cpu", "-o", "/no/such/folder/c.json"], "--output-file"),
    (["measure", "infer", "gpt2", "--device", "cpu", "--nproc", "2"], "--nproc"),
])
def test_bad_input_is_one_line_exit_2(argv: list[str], named: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit(argv, capsys)
    assert code == 2 and named in err and "\n" not in err


def test_core_cli_does_not_import_torch() -> None:
    code = ("import sys; from llmsizer.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent)
    assert out.stdout.strip() == "False"

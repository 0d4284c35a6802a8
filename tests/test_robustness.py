"""Issue 14: every input answered with one clear line, every answer physically possible.

One test per item of the issue's "Why" list (files, numbers, config semantics, impossible
outputs, hangs, conventions)."""

import json
import os
import time

import pytest

from llmsizer.cli import EXIT_DOES_NOT_FIT, EXIT_USAGE, main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *argv, expect=""):
    code, out, err = run(capsys, *argv)
    assert code == EXIT_USAGE, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmsizer: error:"), err
    assert "Traceback" not in err
    assert expect in lines[0], lines[0]
    return lines[0]


LLAMA_TINY = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
              "num_hidden_layers": 2, "vocab_size": 100, "intermediate_size": 128,
              "max_position_embeddings": 512}


# ---- files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("content,expect", [
    (b'\xef\xbb\xbf{"model_type": "llama"}', "byte-order mark"),
    ('{"model_type": "llama"}'.encode("utf-16"), "UTF-16"),
    (b'{"model_type": "ll\xe9ama"}', "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested 100,000 levels"),
    (b'{"hidden_size": NaN}', "NaN is not allowed"),
    (b'{"hidden_size": 1e400}', "out of range"),
    (b'{"a": 1, "a": 2}', "appears twice"),
    (b"", "empty"),
], ids=["utf8-bom", "utf16", "latin1", "deep", "nan", "huge-number", "duplicate", "empty"])
def test_undecodable_or_hostile_config_files_are_one_line(tmp_path, capsys, content, expect):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    line = refused(capsys, "params", path, expect=expect)
    assert str(path) in line


def test_a_directory_without_config_and_dev_zero_and_long_names_are_refused(tmp_path, capsys):
    refused(capsys, "params", tmp_path, expect="no such file")
    if os.path.exists("/dev/zero"):
        t0 = time.perf_counter()
        refused(capsys, "train", "llama-2-7b", "--gpu", "/dev/zero", expect="not a regular file")
        assert time.perf_counter() - t0 < 2
    refused(capsys, "params", "x" * 300 + ".json", expect="at most 255 bytes")
    refused(capsys, "infer", "llama-2-7b", "--gpu", "a100", "--calibration", "y" * 5000,
            expect="calibration")


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path, capsys):
    path = tmp_path / "big.json"
    with open(path, "wb") as f:
        f.truncate(64 * 2**20)
    refused(capsys, "params", path, expect="at most 16,777,216 bytes")


@pytest.mark.parametrize("change,expect", [
    ({"peak_tflops": {"bf16": "989"}}, "field 'peak_tflops.bf16' must be a positive number"),
    ({"memory_bandwidth_gb_s": -1}, "field 'memory_bandwidth_gb_s' = -1"),
    ({"memory": {"value": 80, "unit": "gigs"}}, "one of GB, GiB, TB, TiB"),
    ({"peak_tflop": {}}, "unknown field 'peak_tflop' (did you mean 'peak_tflops'?)"),
    ({"sm_count": True}, "field 'sm_count' must be a positive integer"),
    ({"measured_matmul": {"bf16": {"tflops": -3}}},
     "field 'measured_matmul.bf16.tflops' = -3 must be a positive number"),
    ({"measured_matmul": {"bf16": {"depth": 2048}}}, "measured_matmul.bf16.tflops"),
    ({"measured_matmul": {"fp4": {"tflops": 10}}}, "unknown field 'measured_matmul.fp4'"),
])
def test_gpu_files_follow_their_schema(tmp_path, capsys, change, expect):
    gpu = {"name": "my-gpu", "peak_tflops": {"bf16": 500}, "memory": {"value": 80, "unit": "GB"},
           "memory_bandwidth_gb_s": 3000} | change
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(gpu))
    line = refused(capsys, "train", "llama-2-7b", "--gpu", path, expect=expect)
    assert str(path) in line


def test_every_packaged_accelerator_is_a_valid_gpu_file(tmp_path, capsys):
    from importlib import resources

    entries = json.loads(resources.files("llmsizer.catalog").joinpath(
        "data", "accelerators.json").read_text("utf-8"))
    for entry in entries:
        path = tmp_path / f"{entry['name']}.json"
        path.write_text(json.dumps(entry))
        code, _, err = run(capsys, "gpus", path, "--json")
        assert code == 0, err


@pytest.mark.parametrize("calibration,expect", [
    ({"tile_m": 0}, "field 'tile_m' = 0 must be a positive integer"),
    ({"kernel_overhead_s": -1e-6}, "field 'kernel_overhead_s' = -1e-06"),
    ({"collective_latency_s": -5e-6}, "field 'collective_latency_s'"),
    ({"matmul_ceiling": "0.8"}, "must be a fraction in (0, 1], not '0.8'"),
    ({"matmul_ceiling": 1.5}, "field 'matmul_ceiling' = 1.5"),
    ({"serving": {"default": {"tile_n": True}}}, "field 'serving.default.tile_n'"),
    ({"matmul": 0.5}, "unknown field 'matmul'"),
    ({"matmul_half_k": -5}, "field 'matmul_half_k' = -5 must be a finite number in [0, 1e+09]"),
    ({"fp8_matmul_ceiling_k": "x"}, "field 'fp8_matmul_ceiling_k' must be a finite number"),
    ({"overlap_slowdown": 1.0}, "field 'overlap_slowdown' = 1.0 must be a finite number in [0, 0.99]"),
])
def test_calibration_files_follow_their_schema(tmp_path, capsys, calibration, expect):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(calibration))
    line = refused(capsys, "infer", "llama-2-7b", "--gpu", "h100", "--calibration", path,
                   expect=expect)
    assert "calibration" in line


def test_a_calibration_from_validation_is_accepted(tmp_path, capsys):
    from importlib import resources

    # `calibrate --from-validation` writes the packaged table's format.
    table = resources.files("llmsizer.catalog").joinpath("data", "efficiency.json").read_text(
        "utf-8")
    path = tmp_path / "cal.json"
    path.write_text(table)
    for argv in (["train", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--zero", "1"],
                 ["infer", "llama-2-7b", "--gpu", "a100"]):
        plain = json.loads(run(capsys, *argv, "--json")[1])
        code, out, err = run(capsys, *argv, "--calibration", path, "--json")
        assert code == 0, err
        key = "mfu" if argv[0] == "train" else "tpot_s"
        assert json.loads(out)[key] == pytest.approx(plain[key])


def test_a_gemm_calibration_does_not_carry_training_factors_into_serving(tmp_path, capsys):
    path = tmp_path / "cal.json"
    assert run(capsys, "calibrate", "--gpu", "h100", "--bandwidth-gbs", "3000", "-o", path)[0] == 0
    cal = json.loads(path.read_text())
    assert set(cal) == {"gpu", "source", "memory_ceiling"}  # only what was measured
    _, plain, _ = run(capsys, "infer", "llama-2-7b", "--gpu", "h100", "--json")
    _, calibrated, _ = run(capsys, "infer", "llama-2-7b", "--gpu", "h100", "--calibration", path,
                           "--json")
    a, b = json.loads(plain)["assumptions"], json.loads(calibrated)["assumptions"]
    # Serving keeps its own kernel overhead and matrix ceiling; only the bandwidth moved.
    assert a["kernel_overhead"] == b["kernel_overhead"]
    assert a["matmul_ceiling"] == b["matmul_ceiling"]
    from llmsizer.catalog import get_accelerator

    fraction = 3000e9 / get_accelerator("h100").memory_bandwidth_bytes_s
    assert b["memory_ceiling"].startswith(f"{fraction:.0%}")


def test_case_files_follow_their_schema(tmp_path, capsys):
    case = {"id": "x", "source": "s", "model": {"catalog": "gpt2"}, "gpu": "a100", "gpus": 8,
            "tp": 1, "pp": 1, "dp": 8, "seq": 1024, "micro_batch": 1, "global_batch": 8,
            "sequence_parallel": "false", "measured": {"mfu": 0.4}}
    path = tmp_path / "cases.json"
    path.write_text(json.dumps([case]))
    refused(capsys, "validate", "--training-cases", path,
            expect="item [0] (id 'x'): field 'sequence_parallel' must be true or false")


# ---- numbers -----------------------------------------------------------------------------------

TRAIN = ["train", "llama-2-7b", "--gpu", "h100", "--gpus", "8", "--zero", "1"]


@pytest.mark.parametrize("flag,value", [
    ("--price", "nan"), ("--price", "inf"), ("--price", "1e400"), ("--price", "-2"),
    ("--step-time", "0"), ("--gpu-hours", "0"), ("--tokens-per-s", "-5"),
    ("--matmul-efficiency", "nan"), ("--matmul-efficiency", "2"),
    ("--memory-efficiency", "0"), ("--inter-node-gbps", "inf"), ("--tokens", "0"),
    ("--tokens", "1e400"), ("--seq", "0"), ("--gpus", "2147483647"), ("--tp", "-1"),
    ("--micro-batch", "99999999999999999999"), ("--zero", "²"), ("--zero", "4"),
])
def test_numeric_flags_are_finite_and_in_range(capsys, flag, value):
    refused(capsys, *TRAIN, flag, value, expect=flag.lstrip("-"))


@pytest.mark.parametrize("argv", [
    ["infer", "gpt2", "--gpu", "h100", "--mem-util", "nan"],
    ["infer", "gpt2", "--gpu", "h100", "--block-size", "-1"],
    ["plan-serve", "gpt2", "--gpu", "h100", "--gpus", "8", "--prompt", "128", "--output", "8",
     "--ttft-slo", "infs"],
    ["plan", "gpt2", "--gpu", "h100", "--gpus", "8", "--seq", "1k", "--global-batch", "8",
     "--margin", "1"],
    ["calibrate", "--gpu", "h100", "--gemm-tflops", "nan"],
])
def test_numeric_flags_of_every_command_are_checked(capsys, argv):
    refused(capsys, *argv)


def test_json_never_carries_nan_and_byte_counts_are_integers(capsys):
    code, out, _ = run(capsys, *TRAIN, "--json", "--tokens", "1T", "--price", "2")
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert all(isinstance(v, int) for k, v in data["memory_per_device"].items()
               if k not in ("stage", "in_flight_microbatches", "other_parts"))
    assert isinstance(data["capacity_bytes"], int)
    assert data["currency"] == "USD" and data["cost"] > 0
    assert data["mfu_peak"]["dtype"] == "bf16"
    assert data["mfu_peak"]["flops_per_s_per_device"] == pytest.approx(989.4e12, rel=0.01)


# ---- config semantics --------------------------------------------------------------------------

def test_a_boolean_written_as_a_string_is_refused_in_a_config_file(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA_TINY | {"tie_word_embeddings": "false"}))
    refused(capsys, "params", path, expect="field 'tie_word_embeddings' must be true or false")


def test_negative_experts_are_refused_in_a_config_file(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA_TINY | {"model_type": "mixtral", "num_local_experts": -60}))
    refused(capsys, "params", path, expect="field 'num_local_experts' = -60")


def test_a_prompt_longer_than_the_positions_is_refused_unless_asked(capsys):
    line = refused(capsys, "infer", "gpt2", "--gpu", "h100", "--prompt", "5000")
    assert "1,024 positions" in line and "--allow-long-context" in line
    code, _, _ = run(capsys, "infer", "gpt2", "--gpu", "h100", "--prompt", "2k",
                     "--allow-long-context")
    assert code == 0


def test_rope_scaling_extends_the_position_limit(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA_TINY | {"rope_scaling": {"type": "linear", "factor": 4}}))
    assert run(capsys, "infer", path, "--gpu", "h100", "--prompt", "1k", "--output", "1k")[0] == 0
    line = refused(capsys, "infer", path, "--gpu", "h100", "--prompt", "2k", "--output", "1")
    assert "2,048" in line and "factor 4" in line


def test_config_errors_name_the_file_and_the_users_key(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA_TINY | {"num_attention_heads": 3}))
    line = refused(capsys, "params", path)
    assert str(path) in line and "num_attention_heads" in line and "dict" not in line


# ---- impossible outputs ------------------------------------------------------------------------

def test_zero3_never_uses_more_memory_than_zero0_on_a_small_model(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA_TINY))
    peaks = []
    for zero in ("0", "3"):
        _, out, _ = run(capsys, "train", path, "--gpu", "h100", "--gpus", "8", "--seq", "512",
                        "--zero", zero, "--json")
        peaks.append(json.loads(out)["memory_per_device"]["total"])
    assert peaks[1] <= peaks[0]


def test_mfu_is_never_over_100_percent(capsys):
    for argv in (["gpt2", "--seq", "1k"], ["llama-2-7b", "--seq", "4k", "--mfu-attention",
                                            "dense"]):
        _, out, _ = run(capsys, "train", *argv, "--gpu", "h100", "--gpus", "8", "--json")
        data = json.loads(out)
        assert 0 < data["mfu"] <= 1 and 0 < data["hfu"] <= 1


def test_a_negative_latency_in_a_calibration_file_is_refused(tmp_path, capsys):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"kernel_overhead_s": -0.01}))
    refused(capsys, "infer", "llama-2-7b", "--gpu", "h100", "--calibration", path,
            expect="kernel_overhead_s")


# ---- hangs -------------------------------------------------------------------------------------

def test_plan_with_absurd_gpu_counts_refuses_with_the_limit(capsys):
    t0 = time.perf_counter()
    refused(capsys, "plan", "llama-2-7b", "--gpu", "h100", "--gpus", "2147483647", "--seq", "4k",
            "--global-batch", "64", expect="65,536")
    assert time.perf_counter() - t0 < 1


def test_huge_layer_and_expert_counts_are_refused_not_computed(tmp_path, capsys):
    for change, key in (({"num_hidden_layers": 2_000_000}, "num_hidden_layers"),
                        ({"model_type": "mixtral", "num_local_experts": 10**9},
                         "num_local_experts")):
        path = tmp_path / "config.json"
        path.write_text(json.dumps(LLAMA_TINY | change))
        t0 = time.perf_counter()
        refused(capsys, "params", path, expect=key)
        assert time.perf_counter() - t0 < 1


def test_a_huge_prompt_is_refused_by_the_position_limit_quickly(capsys):
    t0 = time.perf_counter()
    refused(capsys, "infer", "llama-2-7b", "--gpu", "h100", "--prompt", "100000000")
    assert time.perf_counter() - t0 < 1


# ---- conventions -------------------------------------------------------------------------------

@pytest.mark.parametrize("text,tokens", [("4k", 4096), ("4K", 4096), ("127k", 130048),
                                         ("2k", 2048)])
def test_lengths_take_binary_k_suffixes(capsys, text, tokens):
    _, out, _ = run(capsys, "infer", "llama-3.1-8b", "--gpu", "h100", "--prompt", text,
                    "--output", "1k", "--json")
    data = json.loads(out)
    assert data["prompt"] == tokens and data["output"] == 1024


def test_batch_tokens_take_the_binary_reading_when_the_decimal_is_not_a_multiple(capsys):
    code, out, err = run(capsys, "train", "llama-3-70b", "--gpu", "h100", "--gpus", "2048",
                         "--tp", "8", "--seq", "8192", "--global-batch-tokens", "16M",
                         "--allow-long-context", "--json")
    assert json.loads(out)["parallelism"]["global_batch"] == 2048  # 16·2^20 / 8192
    assert "binary" in err and "16,777,216" in err and len(err.strip().splitlines()) == 1


def test_does_not_fit_has_its_own_exit_status_documented_in_help(capsys):
    code, out, _ = run(capsys, "train", "llama-2-70b", "--gpu", "a100", "--gpus", "8")
    assert code == EXIT_DOES_NOT_FIT and "DOES NOT FIT" in out
    code, out, _ = run(capsys, "infer", "llama-2-70b", "--gpu", "rtx-4090")
    assert code == EXIT_DOES_NOT_FIT
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and "3 computed but does not fit" in out


def test_text_output_fits_80_columns_when_not_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    for argv in (TRAIN, ["infer", "llama-2-7b", "--gpu", "h100", "--sweep"],
                 ["plan", "llama-2-7b", "--gpu", "h100", "--gpus", "16", "--seq", "4k",
                  "--global-batch", "64"], ["validate"], ["gpus"], ["models"],
                 ["params", "mixtral-8x7b", "--tp", "2", "--pp", "2"]):
        _, out, _ = run(capsys, *argv)
        assert max(len(line) for line in out.splitlines()) <= 80, argv


def test_columns_is_honoured(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    _, out, _ = run(capsys, *TRAIN)
    assert max(len(line) for line in out.splitlines()) <= 60


def test_help_shows_the_defaults_used_and_every_flag_has_help():
    import argparse

    from llmsizer.cli import build_parser
    from llmsizer.specs.hardware import Accelerator  # noqa: F401  (import check only)

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    issue14 = ("models", "gpus", "params", "train", "infer", "plan", "plan-serve", "validate",
               "calibrate")
    for name in issue14:
        p = sub.choices[name]
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    # The matmul default depends on the GPU: its generation's measured ceiling times the packaged
    # training fit. The help says so, and an answer prints the value it used.
    train_help = " ".join(sub.choices["train"].format_help().split())
    assert "generation's measured maximum, scaled by the packaged training fit" in train_help
    from llmsizer.analysis.efficiency import Efficiency, generation_efficiency
    from llmsizer.catalog import get_accelerator

    packaged = json.loads(__import__("importlib.resources").resources.files(
        "llmsizer.catalog").joinpath("data", "efficiency.json").read_text("utf-8"))
    scale = packaged["training"].get("generations", {}).get("hopper", {}).get("scale", {}).get(
        "matmul_ceiling", packaged["training"]["scale"].get("matmul_ceiling", 1.0))
    used = Efficiency.for_accelerator(get_accelerator("h100")).matmul_ceiling
    assert used == pytest.approx(generation_efficiency("hopper").matmul_ceiling * scale)


def test_errors_name_the_users_flag_not_internal_fields(capsys):
    line = refused(capsys, *TRAIN, "--global-batch", "4")
    assert "grad_accum" not in line and "global-batch" in line
    line = refused(capsys, *TRAIN, "--matmul-efficiency", "1.5")
    assert "matmul_ceiling" not in line and "--matmul-efficiency" in line


def test_output_file_without_export_is_an_error(capsys, tmp_path):
    refused(capsys, "plan", "llama-2-7b", "--gpu", "h100", "--gpus", "8", "--seq", "4k",
            "--global-batch", "64", "-o", tmp_path / "x", expect="--export")


def test_export_with_json_prints_json_with_model_and_gpu(capsys):
    code, out, _ = run(capsys, "plan", "llama-2-7b", "--gpu", "h100", "--gpus", "8", "--seq",
                       "4k", "--global-batch", "64", "--export", "deepspeed", "--json")
    data = json.loads(out)
    assert code == 0 and data["export"]["kind"] == "deepspeed"
    assert json.loads(data["export"]["text"])["train_batch_size"] == 64
    assert data["model"] == "llama-2-7b" and data["gpu"] == "h100-sxm-80gb"
    code, out, _ = run(capsys, "plan-serve", "llama-2-7b", "--gpu", "h100", "--gpus", "8",
                       "--prompt", "1k", "--output", "256", "--json")
    data = json.loads(out)
    assert data["model"] == "llama-2-7b" and data["gpu"] == "h100-sxm-80gb"


def test_plan_cost_carries_its_currency(capsys):
    _, out, _ = run(capsys, "plan", "llama-2-7b", "--gpu", "h100", "--gpus", "8", "--seq", "4k",
                    "--global-batch", "64", "--tokens", "1T", "--price", "2.5", "--currency",
                    "EUR")
    assert "EUR" in out

"""The command line: contract keys of --json, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from llmsizer.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_params_json_has_the_contract_keys(capsys):
    code, out, _ = run(capsys, "params", "llama-2-7b", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["total"] == 6_738_415_616
    assert data["active"] == data["total"]
    assert isinstance(data["breakdown"], dict)
    assert sum(data["breakdown"].values()) == data["total"]
    assert all(isinstance(v, int) for v in data["breakdown"].values())


def test_params_json_moe_active_is_smaller(capsys):
    _, out, _ = run(capsys, "params", "mixtral-8x7b", "--json")
    data = json.loads(out)
    assert data["active"] < data["total"]


def test_params_text_shows_the_exact_count_and_approximations(capsys):
    code, out, _ = run(capsys, "params", "llama-2-7b")
    assert code == 0
    assert "6,738,415,616" in out
    assert "12·L·h²" in out


def test_params_explain_substitutes_values_and_names_sources(capsys):
    _, out, _ = run(capsys, "params", "llama-2-7b", "--explain")
    assert "L·per_layer = 32·" in out
    assert "h·a·d = 4,096·4,096" in out
    assert "Kaplan" in out


def test_params_explain_json_carries_the_tree(capsys):
    _, out, _ = run(capsys, "params", "gpt2", "--json", "--explain")
    tree = json.loads(out)["explain"]
    assert tree["value"] == 124_439_808
    assert sum(c["value"] for c in tree["children"]) == tree["value"]


def test_params_sharding_json(capsys):
    _, out, _ = run(capsys, "params", "llama-2-70b", "--tp", "8", "--pp", "4", "--json")
    sharding = json.loads(out)["sharding"]
    assert sharding["layers_by_stage"] == [20, 20, 20, 20]
    assert len(sharding["per_device_by_stage"]) == 4


def test_params_accepts_a_config_json(tmp_path, capsys):
    cfg = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100,
           "n_positions": 32}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    code, out, _ = run(capsys, "params", str(path), "--json")
    assert code == 0
    h = 64
    per_layer = 12 * h * h + 13 * h  # seed 001: 12h² + 13h for biased MHA + 4h FFN + 2 LN
    assert json.loads(out)["total"] == 2 * per_layer + 100 * h + 32 * h + 2 * h


def test_models_and_gpus_json_list_the_catalogs(capsys):
    _, out, _ = run(capsys, "models", "--json")
    models = json.loads(out)
    assert any(m["name"] == "llama-2-7b" and m["params_total"] == 6_738_415_616 for m in models)
    _, out, _ = run(capsys, "gpus", "--json")
    gpus = json.loads(out)
    a800 = next(g for g in gpus if g["name"].startswith("a800"))
    assert a800["peak_tflops_dense"]["bf16"] == 312
    assert a800["sources"]


def test_gpus_explain_reproduces_the_a800_derivation(capsys):
    _, out, _ = run(capsys, "gpus", "a800", "--explain")
    assert "108 · 4 · 512 · 1410 MHz" in out
    assert "311.9 TFLOP/s" in out


@pytest.mark.parametrize("argv,field", [
    (["params", "llama-2-7"], "did you mean"),
    (["params", "llama-2-7b", "--tp", "3"], "tp=3"),
    (["params", "llama-2-7b", "--tp", "0"], "tp=0"),
    (["params", "llama-2-7b", "--tp", "-2"], "tp=-2"),
    (["params", "llama-2-7b", "--pp", "40"], "pp=40"),
    (["params", "llama-2-7b", "--ep", "2"], "ep=2"),
    (["params", "llama-2-70b", "--tp", "128"], "tp=128"),
    (["params", "/nonexistent/config.json"], "no such file"),
    (["gpus", "h1000"], "did you mean"),
    (["params"], "model"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_with_exit_code_2(capsys, argv, field):
    with pytest.raises(SystemExit) as e:
        code = main(argv)
        raise SystemExit(code)
    assert e.value.code == 2
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("llmsizer: error:")
    assert field in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("content,expect", [
    ('{"model_type": "llama", "hidden_size": 4096,,}', "broken JSON at line 1"),
    ('{"model_type": "t5"}', "model_type = 't5'"),
    ('{"model_type": "llama", "hidden_size": 100, "num_attention_heads": 3, '
     '"num_hidden_layers": 2, "vocab_size": 10, "intermediate_size": 64}',
     "num_attention_heads (n_head) = 3"),
    ('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 8, '
     '"num_key_value_heads": 3, "num_hidden_layers": 2, "vocab_size": 10, '
     '"intermediate_size": 64}', "num_key_value_heads = 3"),
    ('{"model_type": "llama", "hidden_size": -64, "num_attention_heads": 8, '
     '"num_hidden_layers": 2, "vocab_size": 10, "intermediate_size": 64}', "field 'hidden_size' = -64"),
    ('{"model_type": "mixtral", "hidden_size": 64, "num_attention_heads": 8, '
     '"num_hidden_layers": 2, "vocab_size": 10, "intermediate_size": 64, '
     '"num_local_experts": 2, "num_experts_per_tok": 4}', "num_experts_per_tok = 4"),
    ('[1, 2]', "must be a JSON object"),
])
def test_broken_config_files_are_one_line_errors(tmp_path, capsys, content, expect):
    path = tmp_path / "config.json"
    path.write_text(content)
    code, _, err = run(capsys, "params", str(path))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert expect in err


def test_console_script_runs_as_a_process():
    proc = subprocess.run([sys.executable, "-m", "llmsizer", "params", "gpt2", "--json"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total"] == 124_439_808


def test_train_json_has_the_contract_keys(capsys):
    code, out, _ = run(capsys, "train", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--zero", "1",
                       "--global-batch", "64", "--tokens", "1T", "--json")
    assert code == 0
    data = json.loads(out)
    mem = data["memory_per_device"]
    for key in ("weights", "gradients", "optimizer", "activations", "other", "total"):
        assert isinstance(mem[key], (int, float))
    assert mem["total"] == pytest.approx(sum(mem[k] for k in ("weights", "gradients", "optimizer",
                                                              "activations", "other")))
    for key in ("fits", "flops_per_step", "step_time_s", "tokens_per_s", "mfu", "time_to_train_s"):
        assert key in data
    assert data["time_to_train_s"] == pytest.approx(1e12 / data["tokens_per_s"])
    assert data["parallelism"]["grad_accum"] == 8


def test_train_answers_the_llama3_question(capsys):
    code, out, _ = run(capsys, "train", "llama-3-70b", "--gpu", "h100", "--seq", "8192",
                       "--tokens", "15T", "--gpu-hours", "6.4M", "--tp", "8", "--json")
    achieved = json.loads(out)["achieved"]
    assert achieved["mfu_6N"] == pytest.approx(0.279, abs=0.001)


def test_train_that_does_not_fit_says_by_how_much_and_what_would(capsys):
    code, out, _ = run(capsys, "train", "llama-2-70b", "--gpu", "a100", "--gpus", "8")
    assert code == 3  # computed, does not fit: a status of its own for scripts
    assert "DOES NOT FIT" in out and "over" in out
    assert "would fit: --zero 3" in out


def test_train_explain_shows_formulas(capsys):
    _, out, _ = run(capsys, "train", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--zero", "1",
                    "--explain")
    assert "MFU = model FLOPs/step / (step time · GPUs · peak)" in out
    # ZeRO-1 over 8 ranks: K = 4 + 8 bytes per parameter, sharded
    assert "optimizer = Ψ·12 bytes/8 = 6,738,415,616·12/8" in out
    assert "weights = Ψ·2 bytes = 6,738,415,616·2" in out
    assert "Q and K: e·s·b·(q + kv)" in out


@pytest.mark.parametrize("argv,expect", [
    (["--gpus", "6", "--tp", "4"], "gpus=6"),
    (["--gpus", "6", "--tp", "3"], "tp=3"),
    (["--gpus", "1", "--zero", "5"], "zero="),
    (["--gpus", "8", "--global-batch", "12"], "global-batch=12"),
    (["--gpus", "8", "--schedule", "interleaved:1", "--pp", "2"], "schedule="),
    (["--gpus", "8", "--recompute", "half"], "recompute='half'"),
    (["--gpus", "8", "--precision", "fp12"], "precision='fp12'"),
    (["--gpus", "8", "--optimizer", "lion"], "optimizer='lion'"),
    (["--gpus", "8", "--tokens", "lots"], "--tokens=lots"),
    (["--gpus", "8", "--offload", "optimizer"], "offload='optimizer'"),
    (["--gpus", "8", "--sequence-parallel"], "--sequence-parallel=True"),
    (["--gpus", "8", "--ep", "2"], "ep=2"),
    (["--gpus", "8", "--gpu-hours", "5"], "gpu-hours"),
])
def test_train_bad_settings_are_one_line_errors(capsys, argv, expect):
    code, _, err = run(capsys, "train", "llama-2-7b", "--gpu", "a100", *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert expect in err


@pytest.mark.parametrize("argv,expect", [
    (["train", "llama-2-7b", "--gpu", "v100", "--gpus", "8"], "try --precision mixed-fp16"),
    (["infer", "llama-2-7b", "--gpu", "v100"], "try --weights fp16"),
])
def test_a_dtype_the_gpu_lacks_is_refused_with_the_way_out(capsys, argv, expect):
    # V100 has no bf16 tensor cores: the default bf16 recipes are refused, not silently changed.
    code, _, err = run(capsys, *argv)
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1


def test_power_limit_slows_compute_and_is_checked():
    from clirun import run_cli

    base = ["train", "llama-3.1-8b", "--gpu", "h100", "--gpus", "8", "--zero", "3", "--json"]
    code, out, _ = run_cli(base)
    assert code == 0
    rated = json.loads(out)
    code, out, _ = run_cli(base + ["--power-limit", "500"])
    assert code == 0
    capped = json.loads(out)
    # compute runs at (500/700)^(1/3) = 0.894 of the clock; memory streams and links do not slow
    assert rated["step_time_s"] < capped["step_time_s"] < rated["step_time_s"] / 0.894
    for bad in ("0", "nan", "-5", "watts"):
        code, out, err = run_cli(base + ["--power-limit", bad])
        assert code == 2 and "--power-limit" in err and "Traceback" not in err
    # no rated TDP: nothing to derive the clock from
    code, _, err = run_cli(["infer", "llama-3.1-8b", "--gpu", "tpu-v5e", "--power-limit", "100"])
    assert code == 2 and "--power-limit" in err and "tdp_w" in err


def test_moe_dispatch_flags_on_train_and_plan(capsys):
    base = ("train", "deepseek-v3", "--gpu", "b200", "--gpus", "256", "--pp", "8", "--ep", "32",
            "--schedule", "interleaved:2", "--global-batch", "2048", "--seq", "4096",
            "--framework", "nemo", "--zero", "1", "--recompute", "selective", "--precision",
            "fp8", "--json")
    code, out, _ = run(capsys, *base)
    serial = json.loads(out)["communication_s"]["expert all-to-all"]
    assert code == 0 and serial["hidden"] == 0
    _, out, _ = run(capsys, *base, "--moe-dispatcher", "deepep", "--moe-a2a-overlap")
    both = json.loads(out)["communication_s"]["expert all-to-all"]
    assert both["total"] < serial["total"] and both["exposed"] < both["total"]
    # refused where Megatron-Core refuses it: one line naming the flag, exit code 2
    for bad in (("--schedule", "1f1b"), ("--framework", "fsdp2"), ("--recompute", "full")):
        code, _, err = run(capsys, *base, "--moe-a2a-overlap", *bad)
        assert code == 2 and "moe-a2a-overlap" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, *base, "--moe-dispatcher", "nccl")
    assert code == 2 and "--moe-dispatcher" in err
    code, out, _ = run(capsys, "plan", "qwen3-30b-a3b", "--gpu", "h100", "--gpus", "16",
                       "--global-batch", "64", "--seq", "4096", "--moe-dispatcher", "deepep",
                       "--moe-a2a-overlap", "--top", "1", "--json")
    assert code == 0 and json.loads(out)


def test_cuda_graphs_flag_on_train_and_plan(capsys):
    base = ("train", "qwen3-30b-a3b", "--gpu", "b200", "--gpus", "8", "--ep", "8", "--zero", "1",
            "--global-batch", "64", "--seq", "4096", "--framework", "nemo", "--json")
    code, out, _ = run(capsys, *base)
    eager = json.loads(out)
    code2, out, _ = run(capsys, *base, "--cuda-graphs", "attn,moe_router")
    graphed = json.loads(out)
    # captured kernels cost no launch: the step only gets shorter, and says why
    assert code == code2 == 0 and graphed["step_time_s"] < eager["step_time_s"]
    assert "CUDA graphs: attn,moe_router" in json.dumps(graphed)
    code, _, err = run(capsys, *base, "--cuda-graphs", "all")
    assert code == 2 and "--cuda-graphs" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run(capsys, "plan", "qwen3-30b-a3b", "--gpu", "h100", "--gpus", "16",
                       "--global-batch", "64", "--seq", "4096", "--cuda-graphs", "moe_router",
                       "--top", "1", "--json")
    assert code == 0 and json.loads(out)


def test_compile_switch_fuses_elementwise_ops_and_explains_it(capsys):
    base = ("train", "llama-3.1-8b", "--gpu", "h100", "--gpus", "8", "--zero", "3",
            "--global-batch", "16", "--micro-batch", "2", "--seq", "8192", "--recompute",
            "selective", "--json")
    code, out, _ = run(capsys, *base, "--framework", "torchtitan")
    eager = json.loads(out)
    code2, out, _ = run(capsys, *base, "--framework", "torchtitan+compile")
    compiled = json.loads(out)
    # unfused RMSNorm/rotary/SwiGLU move more bytes: compiling only shortens the step
    assert code == code2 == 0 and compiled["step_time_s"] < eager["step_time_s"]
    assert "unfused PyTorch ops" in json.dumps(eager)
    assert "unfused PyTorch ops" not in json.dumps(compiled)
    code, _, err = run(capsys, *base, "--framework", "torchtitan+compiled")
    assert code == 2 and "--framework" in err and len(err.strip().splitlines()) == 1

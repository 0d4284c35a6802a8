"""A seeded, time-bounded fuzz campaign of the command line (issue 14).

Each run draws command lines from a grammar of commands, flags and good, edge and bad values,
runs them in-process through llmsizer.cli.main, and fails on a traceback, a hang (10 s per
command), an exit status other than 0/2/3, a refusal that is not exactly one line, NaN or
infinity in the output, or JSON that does not parse strictly."""

import contextlib
import io
import json
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from llmsizer.cli import main

SEED = 14
BUDGET_S = 40.0
PER_COMMAND_S = 10

MODELS = ["gpt2", "llama-2-7b", "mixtral-8x7b", "llama-3.1-8b", "qwen1.5-moe-a2.7b", "nope", "",
          "/dev/zero", "/", "x" * 300, "config.json"]
GPUS = ["h100", "a100", "v100", "mi300x", "rtx-4090", "h1000", "/dev/null", "gpu.json"]
NUMBERS = ["0", "1", "-1", "2", "3", "7", "8", "64", "1e400", "nan", "inf", "-inf", "1.5", "4k",
           "128k", "16M", "2147483647", "99999999999999999999", "²", "1_000", "", " ", "abc",
           "0.0", "1e-9", "0x10", "4K", "1M", "15T", "-0"]
WORDS = ["none", "full", "selective", "1f1b", "interleaved:2", "gpipe", "mixed", "bf16", "fp8",
         "int4", "adam", "sgd", "optimizer", "params", "deepspeed", "megatron", "vllm", "cost",
         "memory", "time", "dense", "causal", "cpu", "nvme", "full_shard", "??"]

FLAGS = {
    "train": ["--gpus", "--gpus-per-node", "--tokens", "--seq", "--global-batch",
              "--global-batch-tokens", "--micro-batch", "--tp", "--pp", "--cp", "--ep", "--zero",
              "--offload", "--recompute", "--schedule", "--precision", "--optimizer",
              "--price", "--matmul-efficiency", "--memory-efficiency", "--comm-efficiency",
              "--inter-node-gbps", "--gpu-hours", "--step-time", "--tokens-per-s", "--overhead",
              "--mfu-attention", "--attention", "--offload-device"],
    "infer": ["--tp", "--pp", "--batch", "--prompt", "--output", "--max-seq", "--weights",
              "--kv-dtype", "--mem-util", "--block-size", "--overhead", "--gpus-per-node"],
    "plan": ["--gpus", "--seq", "--global-batch", "--global-batch-tokens", "--tokens", "--top",
             "--objective", "--margin", "--price", "--precision", "--export"],
    "plan-serve": ["--gpus", "--prompt", "--output", "--ttft-slo", "--tpot-slo", "--weights",
                   "--kv-dtype", "--mem-util", "--top", "--export"],
    "params": ["--tp", "--pp", "--ep"],
}
SWITCHES = {"train": ["--json", "--explain", "--sequence-parallel", "--no-dp-overlap",
                      "--allow-long-context"],
            "infer": ["--json", "--explain", "--sweep", "--unfused-attention",
                      "--allow-long-context"],
            "plan": ["--json", "--no-offload", "--allow-cross-node-tp"],
            "plan-serve": ["--json"], "params": ["--json", "--explain"]}
REQUIRED = {"plan": ["--gpus", "--seq", "--global-batch"],
            "plan-serve": ["--gpus", "--prompt", "--output"]}
SAFE = {"--gpus": "8", "--seq": "2k", "--global-batch": "64", "--prompt": "512",
        "--output": "128"}


def _value(rng, flag):
    if rng.random() < 0.5 and flag in SAFE:
        return SAFE[flag]
    return rng.choice(NUMBERS + WORDS if rng.random() < 0.3 else NUMBERS)


def draw(rng, files):
    command = rng.choice(list(FLAGS) + ["models", "gpus"])
    if command in ("models", "gpus"):
        return [command] + (["--json"] if rng.random() < 0.5 else [])
    model = rng.choice(MODELS)
    model = files.get(model, model)
    argv = [command, model]
    if command != "params":
        argv += ["--gpu", files.get(g := rng.choice(GPUS), g)]
    for flag in REQUIRED.get(command, []):
        argv += [flag, _value(rng, flag)]
    for flag in rng.sample(FLAGS[command], k=rng.randint(0, min(4, len(FLAGS[command])))):
        if flag in REQUIRED.get(command, []):
            continue
        if flag == "--global-batch-tokens" and "--global-batch" in argv:
            continue
        argv += [flag, _value(rng, flag) if flag not in ("--export",) else rng.choice(WORDS)]
    switches = SWITCHES[command]
    argv += rng.sample(switches, k=rng.randint(0, min(2, len(switches))))
    return argv


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


# Python prints nan/inf; JSON NaN/Infinity ("Infinity Fabric" is AMD's link, not a number).
NON_FINITE = re.compile(r"(?<![\w.])-?(nan|NaN|inf|Infinity)(?![\w]| Fabric)")


def check(argv):
    """Run one command line; return a problem description, or None."""
    out, err = io.StringIO(), io.StringIO()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(PER_COMMAND_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except Hang:
        return "hang"
    except BaseException as e:  # noqa: BLE001 (anything escaping main is the bug)
        return f"traceback: {type(e).__name__}: {e}"
    finally:
        signal.alarm(0)
    stdout, stderr = out.getvalue(), err.getvalue()
    if code not in (0, 2, 3):
        return f"exit status {code}: {stderr.strip()[:300]}"
    if code == 2:
        lines = stderr.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("llmsizer: error:"):
            return f"refusal not one line: {stderr!r}"[:400]
        return None
    if "--json" not in argv and NON_FINITE.search(stdout):
        return f"non-finite number in output: {NON_FINITE.search(stdout).group(0)}"
    if "--json" in argv:
        try:
            json.loads(stdout, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        except ValueError as e:
            return f"bad JSON: {e}"[:300]
    return None


@pytest.fixture
def files(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                  "num_attention_heads": 4, "num_hidden_layers": 2,
                                  "vocab_size": 100, "intermediate_size": 128,
                                  "tie_word_embeddings": "false"}))
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({"name": "g", "peak_tflops": {"bf16": "989"},
                               "memory": {"value": 80, "unit": "GB"},
                               "memory_bandwidth_gb_s": 3000}))
    return {"config.json": str(config), "gpu.json": str(gpu)}


def test_fuzz_the_command_line(files, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    rng = random.Random(SEED)
    problems, runs = [], 0
    deadline = time.monotonic() + BUDGET_S
    while time.monotonic() < deadline:
        argv = draw(rng, files)
        runs += 1
        problem = check(argv)
        if problem and all(problem != p for _, p in problems):
            problems.append((argv, problem))
            if len(problems) >= 10:
                break
    assert runs >= 100, f"only {runs} command lines in {BUDGET_S} s"
    assert not problems, "\n".join(f"{' '.join(a)} -> {p}" for a, p in problems)


@pytest.mark.parametrize("argv", [
    ["train", "llama-2-7b", "--gpu", "h100", "--price", "nan"],
    ["infer", "gpt2", "--gpu", "h100", "--prompt", "100000000"],
    ["plan", "llama-2-7b", "--gpu", "h100", "--gpus", "2147483647", "--seq", "4k",
     "--global-batch", "64"],
    ["params", "/dev/zero"],
])
def test_refusals_as_a_process_are_one_line_and_quick(argv):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "llmsizer", *argv], capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 10


def test_output_of_a_process_fits_80_columns_when_piped():
    proc = subprocess.run([sys.executable, "-m", "llmsizer", "train", "llama-2-7b", "--gpu",
                           "h100", "--gpus", "8", "--zero", "1"], capture_output=True, text=True,
                          timeout=60, check=False, env={"PATH": "/usr/bin:/bin"} | {
                              k: v for k, v in __import__("os").environ.items()
                              if k != "COLUMNS"})
    assert proc.returncode == 0, proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80

"""plan-serve on the simulator: plans meet their SLOs with the fewest replicas, the search is
bounded, and the launch commands use only flags each engine documents and the model's Hugging
Face repo id. (The engines' own argument parsers need CUDA builds of torch to install, so the flags
are checked against the documented lists below instead.)"""

from __future__ import annotations

import json
import shlex

import pytest
from clirun import run_cli

# vllm serve: https://docs.vllm.ai/en/v0.8.5/serving/engine_args.html
VLLM_FLAGS = {"--tensor-parallel-size", "--pipeline-parallel-size", "--max-num-seqs",
              "--max-num-batched-tokens", "--max-model-len", "--gpu-memory-utilization",
              "--block-size", "--kv-cache-dtype", "--quantization", "--speculative-config"}
# python -m sglang.launch_server: https://docs.sglang.io/advanced_features/server_arguments.html
SGLANG_FLAGS = {"--model-path", "--tp-size", "--pp-size", "--max-running-requests",
                "--chunked-prefill-size", "--context-length", "--mem-fraction-static",
                "--kv-cache-dtype", "--quantization", "--speculative-algorithm",
                "--speculative-num-steps", "--speculative-num-draft-tokens",
                "--speculative-draft-model-path"}
# trtllm-serve: https://nvidia.github.io/TensorRT-LLM/0.18.2/commands/trtllm-serve.html
TRTLLM_FLAGS = {"--backend", "--tp_size", "--pp_size", "--max_batch_size", "--max_num_tokens",
                "--max_seq_len", "--kv_cache_free_gpu_memory_fraction"}
PREFIX = {"vllm": ["vllm", "serve"], "sglang": ["python", "-m", "sglang.launch_server"],
          "trtllm": ["trtllm-serve"]}
FLAGS = {"vllm": VLLM_FLAGS, "sglang": SGLANG_FLAGS, "trtllm": TRTLLM_FLAGS}

BASE = ["plan-serve", "llama-2-7b", "--gpu", "a100-80gb", "--gpus", "4", "--prompt", "512",
        "--output", "64", "--qps", "12", "--ttft-slo", "500ms", "--tpot-slo", "40ms",
        "--requests", "100"]


_cli = run_cli


@pytest.fixture(scope="module")
def plan() -> dict:
    code, out, _ = _cli([*BASE, "--json", "--top", "50"])
    assert code == 0
    return json.loads(out)


def test_every_plan_meets_the_slos_within_the_gpus(plan):
    assert plan["mode"] == "simulated" and plan["plans"]
    assert plan["hf_model_id"] == "meta-llama/Llama-2-7b-hf"
    for p in plan["plans"]:
        assert p["ttft_s"] <= 0.5 and p["tpot_s"] <= 0.04
        assert p["gpus"] == p["tp"] * p["pp"] * p["replicas"] <= 4
    per_gpu = [p["goodput_requests_per_s_per_gpu"] for p in plan["plans"]]
    assert per_gpu == sorted(per_gpu, reverse=True)


def test_the_search_is_bounded(plan):
    assert plan["candidates"] <= 63
    assert plan["simulations"] <= plan["candidates"] * 6


def test_the_best_plan_uses_the_fewest_replicas_that_meet_the_slos(plan):
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.analysis.inference import ServingConfig
    from llmsizer.analysis.serving_sim import simulate
    from llmsizer.catalog import get_accelerator, get_model
    from llmsizer.serving.engines import engine_profile
    from llmsizer.serving.planner import MIN_REQUESTS_PER_REPLICA
    from llmsizer.serving.search import meets
    from llmsizer.serving.workload import synthetic

    best = plan["plans"][0]
    spec, acc = get_model("llama-2-7b"), get_accelerator("a100-80gb")
    eng = engine_profile("vllm", acc).with_limits(best["max_num_seqs"],
                                                  best["max_num_batched_tokens"])

    def run(n: int):  # type: ignore[no-untyped-def]
        w = synthetic(max(100, MIN_REQUESTS_PER_REPLICA * n), 512, 64, qps=12.0,
                      concurrency=None, seed=0)
        return simulate(spec, acc, ServingConfig(tp=best["tp"], pp=best["pp"]), eng, w,
                        replicas=n, eff=Efficiency.for_accelerator(acc, workload="serving"),
                        cost_tokens=16384)

    n = best["replicas"]
    assert meets(run(n), 90, 0.5, 0.04).meets
    if n > 1:
        assert not meets(run(n - 1), 90, 0.5, 0.04).meets


@pytest.mark.parametrize("kind", ["vllm", "sglang", "trtllm"])
def test_exports_use_documented_flags_and_the_hf_repo_id(kind, plan):
    code, out, _ = _cli([*BASE, "--engine", "vllm", "--export", kind])
    assert code == 0
    comment, command = out.strip().splitlines()
    best = plan["plans"][0]
    assert comment.startswith(f"# launch {best['replicas']} instance")
    argv = shlex.split(command)
    prefix = PREFIX[kind]
    assert argv[: len(prefix)] == prefix
    rest = argv[len(prefix):]
    if kind != "sglang":  # positional model id
        assert rest[0] == "meta-llama/Llama-2-7b-hf"
        rest = rest[1:]
    flags = dict(zip(rest[::2], rest[1::2], strict=True))
    assert set(flags) <= FLAGS[kind], set(flags) - FLAGS[kind]
    tp = {"vllm": "--tensor-parallel-size", "sglang": "--tp-size", "trtllm": "--tp_size"}[kind]
    seqs = {"vllm": "--max-num-seqs", "sglang": "--max-running-requests",
            "trtllm": "--max_batch_size"}[kind]
    assert int(flags[tp]) == best["tp"] and int(flags[seqs]) == best["max_num_seqs"]
    if kind == "sglang":
        assert flags["--model-path"] == "meta-llama/Llama-2-7b-hf"


def test_the_static_search_stays_reachable():
    code, out, _ = _cli(["plan-serve", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--prompt",
                         "1024", "--output", "256", "--tpot-slo", "50ms", "--qps", "5",
                         "--static", "--json"])
    data = json.loads(out)
    assert code == 0 and "mode" not in data and data["plans"]
    assert {"tp", "pp", "replicas", "max_num_seqs", "tokens_per_s_per_gpu"} <= set(
        data["plans"][0])


def test_no_plan_meets_an_impossible_slo_exit_3():
    code, out, _ = _cli([*BASE[:-6], "--ttft-slo", "1ms", "--requests", "50"])
    assert code == 3 and "no configuration" in out


@pytest.mark.parametrize("argv, flag", [
    (["--export", "tgi"], "--export"),
    (["--engine", "tgi"], "--engine"),
])
def test_bad_simulated_plan_flags_exit_2(argv, flag):
    code, out, err = _cli([*BASE, *argv])
    assert code == 2 and len(err.strip().splitlines()) == 1 and flag in err


def test_a_rate_without_an_slo_is_refused():
    code, _, err = _cli(["plan-serve", "llama-2-7b", "--gpu", "a100", "--gpus", "8",
                         "--prompt", "512", "--output", "64", "--qps", "5"])
    assert code == 2 and "--qps" in err

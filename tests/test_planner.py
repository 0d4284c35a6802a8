"""The planner: never beaten by brute force, seed 002's tie order, honest about what fits."""

import json

import pytest

from llmsizer import ModelSpec, get_accelerator, get_model
from llmsizer.analysis import step
from llmsizer.analysis.cluster import Cluster
from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.planner import SearchSpace, search
from llmsizer.analysis.training import train_step
from llmsizer.cli import main
from llmsizer.errors import SpecError
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import optimizer, training_precision

MIXED, ADAM = training_precision("mixed"), optimizer("adam")
A100 = get_accelerator("a100")


def setting(spec, seq=2048, acc=A100):
    return step.Setting(spec, seq, MIXED, ADAM, Cluster(acc), Efficiency())


def brute_force(spec, gpus, global_batch, seq, capacity, space):
    """Every layout of the space through the single-layout analysis, one at a time."""
    best = None
    for tp in (1, 2, 4, 8):
        for pp in (1, 2, 4):
            if gpus % (tp * pp):
                continue
            dp = gpus // (tp * pp)
            if global_batch % dp:
                continue
            for mb in space.micro_batches:
                if (global_batch // dp) % mb:
                    continue
                for rec in space.recomputes:
                    for zero in space.zero_stages:
                        if zero and dp == 1:
                            continue
                        for sched, v in [("1f1b", 1)] + ([("gpipe", 1)] if pp > 1 else []):
                            try:
                                par = Parallelism(dp=dp, tp=tp, pp=pp, zero=zero, recompute=rec,
                                                  micro_batch=mb,
                                                  grad_accum=global_batch // dp // mb,
                                                  schedule=sched, virtual_stages=v,
                                                  sequence_parallel=tp > 1)
                                r = train_step(spec, par, MIXED, ADAM, seq, Cluster(A100), Efficiency())
                            except SpecError:
                                continue
                            fits = r.memory.peak.total <= capacity
                            if fits and (best is None or r.time.total_s < best[0]):
                                best = (r.time.total_s, par)
    return best


def test_planner_is_never_beaten_by_brute_force():
    spec = get_model("llama-2-7b")
    space = SearchSpace(gpus=8, global_batch=32, micro_batches=(1, 2), offload=False,
                        interleave=())
    result = search(setting(spec), space, margin=0.0, tie_tolerance=0.0)
    best_time, _ = brute_force(spec, 8, 32, 2048, A100.memory_bytes, space)
    assert result.ranked[0].step_s <= best_time * (1 + 1e-9)
    assert result.ranked[0].step_s == pytest.approx(best_time)


def test_the_chosen_layout_reproduces_in_train_step():
    spec = get_model("llama-2-13b")
    result = search(setting(spec), SearchSpace(gpus=16, global_batch=64))
    best = result.ranked[0]
    r = train_step(spec, best.par, MIXED, ADAM, 2048, Cluster(A100), Efficiency())
    assert r.time.total_s == pytest.approx(best.step_s)
    assert r.memory.peak.total == pytest.approx(best.peak_bytes)


def test_ties_go_to_the_simpler_layout_in_seed_002_order():
    # A small model on 8 GPUs fits everywhere. ZeRO-1 is a little faster (a sharded optimizer
    # step) but within the tie tolerance, so "if plain data parallelism fits, don't use ZeRO"
    # decides (seed 002).
    spec = ModelSpec("small", num_layers=4, hidden_size=512, num_heads=8, vocab_size=1000,
                     ffn_size=1024)
    strict = search(setting(spec, seq=512), SearchSpace(gpus=8, global_batch=64),
                    tie_tolerance=0.0)
    assert strict.ranked[0].par.zero >= 1  # strictly fastest: a ZeRO layout
    tied = search(setting(spec, seq=512), SearchSpace(gpus=8, global_batch=64),
                  tie_tolerance=0.10)
    best = tied.ranked[0]
    assert best.par.zero == 0 and not best.par.offload and best.par.recompute == "none"
    assert best.step_s <= strict.ranked[0].step_s * 1.10


def test_only_zero3_with_offload_fits_and_is_returned():
    # Llama-2-13B on 2× RTX 4090 (24 GB): the bf16 weights alone are 26 GB, so every layout that
    # keeps them whole fails; split in two (tp or pp, dp = 1) the rest of the model states
    # (14 bytes × 6.5B) cannot go anywhere; ZeRO-3 over dp = 2 needs 104 GB per GPU unless the
    # optimizer states leave for the host. Only ZeRO-3 with offload fits.
    spec = get_model("llama-2-13b")
    acc = get_accelerator("rtx4090")
    space = SearchSpace(gpus=2, global_batch=2, micro_batches=(1,), max_cp=1)
    result = search(setting(spec, seq=1024, acc=acc), space)
    assert result.ranked, "something must fit"
    for cand in result.ranked:
        assert cand.par.zero == 3 and "optimizer" in cand.par.offload


def test_impossible_request_says_by_how_much():
    spec = get_model("llama-3.1-405b")
    result = search(setting(spec, seq=4096), SearchSpace(gpus=8, global_batch=8, offload=False))
    assert result.ranked == []
    assert result.least_memory is not None
    assert result.least_memory.peak_bytes > result.capacity_bytes


def test_plan_cli_json_and_exports(capsys, tmp_path):
    code = main(["plan", "llama-2-7b", "--gpu", "a100", "--gpus", "16", "--seq", "4096",
                 "--global-batch", "64", "--json", "--top", "3"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and len(data["plans"]) == 3
    assert data["plans"][0]["step_time_s"] <= data["plans"][1]["step_time_s"] * 1.005
    out = tmp_path / "ds.json"
    main(["plan", "llama-2-7b", "--gpu", "a100", "--gpus", "16", "--seq", "4096",
          "--global-batch", "64", "--export", "deepspeed", "-o", str(out)])
    cfg = json.loads(out.read_text())
    assert cfg["train_batch_size"] == 64
    best = data["plans"][0]
    assert cfg["train_micro_batch_size_per_gpu"] == best["micro_batch"]
    assert cfg["zero_optimization"]["stage"] == best["zero"]


def test_plan_impossible_cli_says_so(capsys):
    code = main(["plan", "llama-3.1-405b", "--gpu", "a100", "--gpus", "8", "--seq", "4096",
                 "--global-batch", "8", "--no-offload"])
    out = capsys.readouterr().out
    assert code == 3 and "NOTHING FITS" in out and "over" in out


def test_plan_serve_meets_the_objectives(capsys):
    code = main(["plan-serve", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--prompt", "1024",
                 "--output", "256", "--tpot-slo", "50ms", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["plans"]
    for p in data["plans"]:
        assert p["tpot_s"] <= 0.05
    per_gpu = [p["tokens_per_s_per_gpu"] for p in data["plans"]]
    assert per_gpu == sorted(per_gpu, reverse=True)


def test_plan_serve_exports_vllm_arguments(capsys):
    main(["plan-serve", "llama-2-70b", "--gpu", "h100", "--gpus", "8", "--prompt", "1024",
          "--output", "256", "--export", "vllm"])
    line = capsys.readouterr().out.strip()
    # engines load by Hugging Face repo id, not by llmsizer's short name
    assert line.startswith("vllm serve meta-llama/Llama-2-70b-hf --tensor-parallel-size ")
    assert "--max-model-len 1280" in line and "--gpu-memory-utilization 0.9" in line


@pytest.mark.parametrize("argv,expect", [
    (["plan", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--seq", "4096",
      "--global-batch", "8", "--margin", "1.5"], "margin=1.5"),
    (["plan", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--seq", "4096",
      "--global-batch", "8", "--objective", "fun"], "objective='fun'"),
    (["plan", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--seq", "4096",
      "--global-batch", "8", "--export", "slurm"], "export='slurm'"),
    (["plan-serve", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--prompt", "10",
      "--output", "10", "--ttft-slo", "soon"], "ttft-slo='soon'"),
])
def test_plan_bad_input_is_one_line(capsys, argv, expect):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1


def test_the_nearest_misfit_is_faster_and_over_the_limit():
    spec = get_model("llama-2-13b")
    result = search(setting(spec), SearchSpace(gpus=8, global_batch=32))
    miss = result.nearest_misfit
    assert miss is not None
    assert miss.step_s < result.ranked[0].step_s
    assert miss.peak_bytes > result.capacity_bytes

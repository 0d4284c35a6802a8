"""The serving simulator: invariants of any queueing system, and agreement with the per-op
model for a request alone. Expected values come from arithmetic on forward_pass, from queueing
theory or from the request timestamps, never from a stored run."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from clirun import run_cli

from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.inference import ServingConfig, _topology, forward_pass
from llmsizer.analysis.serving_sim import kv_pool, simulate
from llmsizer.catalog import get_accelerator, get_model
from llmsizer.serving.engines import engine_profile
from llmsizer.serving.workload import Workload, from_trace, gamma_arrivals, synthetic

SPEC = get_model("llama-2-7b")
ACC = get_accelerator("a100-80gb")
CFG = ServingConfig()
EFF = Efficiency.for_accelerator(ACC, workload="serving")
VLLM = engine_profile("vllm", ACC)


def _run(work: Workload, engine=VLLM, cfg=CFG, **kw):  # type: ignore[no-untyped-def]
    return simulate(SPEC, ACC, cfg, engine, work, eff=EFF, **kw)


def _pass_s(batch: int, new: int, context: int, decode: bool) -> float:
    return forward_pass(SPEC, ACC, CFG, EFF, batch, new, context,
                        topology=_topology(ACC, 8, EFF), decode=decode).time_s


def _small_pool_cfg(tokens: int, engine=VLLM) -> ServingConfig:  # type: ignore[no-untyped-def]
    """A config whose KV pool holds about `tokens` tokens: the runtime overhead takes the rest."""
    pool = kv_pool(SPEC, ACC, CFG, engine)
    spare = pool.pool_bytes - tokens * pool.block_bytes / pool.block_size
    share = engine.memory_fraction if engine.kv_pool == "free" else 1.0
    return replace(CFG, runtime_overhead=CFG.runtime_overhead + spare / share)


def test_a_request_alone_gets_the_prefill_pass_as_ttft_and_one_decode_step_as_tpot():
    prompt, output = 1000, 64
    r = _run(synthetic(1, prompt, output, qps=1.0, concurrency=None))
    host = VLLM.step_overhead_s + VLLM.seq_overhead_s  # scheduler time per step, one sequence
    ttft = _pass_s(1, prompt, prompt, decode=False) + host
    # Decode steps run at contexts prompt+1 … prompt+output-1; decode attention is memory-bound
    # and affine in the context, so their mean is the step at the mean context prompt + output/2.
    tpot = _pass_s(1, 1, prompt + output // 2, decode=True) + host
    assert r.dist("ttft").mean == pytest.approx(ttft, rel=1e-9)
    assert r.dist("tpot").mean == pytest.approx(tpot, rel=1e-9)
    assert r.dist("e2e").mean == pytest.approx(ttft + (output - 1) * tpot, rel=1e-9)


def test_a_closed_loop_of_one_client_is_requests_one_after_another():
    prompts, outputs = (300, 50, 700), (5, 9, 3)
    work = Workload(prompts, outputs, None, concurrency=1)
    r = _run(work)
    host = VLLM.step_overhead_s + VLLM.seq_overhead_s
    start = 0.0
    for i, (p, o) in enumerate(zip(prompts, outputs, strict=True)):
        alone = _pass_s(1, p, p, False) + host + sum(
            _pass_s(1, 1, c, True) + host for c in range(p + 1, p + o))
        assert r.send_s[i] == pytest.approx(start, abs=1e-12)  # sent when the last one ended
        assert r.finish_s[i] - r.send_s[i] == pytest.approx(alone, rel=1e-9)
        start = r.finish_s[i]


def test_no_request_finishes_before_it_arrives_and_ttft_is_within_e2e():
    work = synthetic(800, 512, 128, qps=12.0, concurrency=None, seed=3,
                     prompt_spread="uniform:0.9", output_spread="exponential")
    r = _run(work)
    assert np.all(np.isfinite(r.finish_s))
    assert np.all(r.send_s <= r.first_token_s)
    assert np.all(r.first_token_s <= r.finish_s)
    assert np.all(r.ttft > 0) and np.all(r.ttft <= r.e2e)
    assert np.allclose(r.send_s, work.arrival_s)  # no client cap: sent when scheduled


def test_kv_blocks_in_use_never_exceed_the_pool_even_under_preemption():
    cfg = _small_pool_cfg(20_000)
    r = _run(synthetic(300, 1500, 400, qps=50.0, concurrency=None, seed=1), cfg=cfg)
    assert r.pool.tokens < 22_000
    assert r.preemptions > 0  # the pool did bind
    assert r.kv_utilization_max <= 1.0
    assert np.all(np.isfinite(r.finish_s))


def test_requests_between_first_token_and_finish_fit_the_pool():
    # TRT-LLM's reservation holds ceil((prompt + output)/block) blocks from admission (before
    # the first token) to the end, so requests in that span at any moment must fit the pool.
    trt = engine_profile("trtllm", ACC)
    cfg = _small_pool_cfg(12_000, trt)
    prompt, output = 1000, 200
    r = _run(synthetic(200, prompt, output, qps=40.0, concurrency=None, seed=2), engine=trt,
             cfg=cfg)
    per_request = math.ceil((prompt + output) / trt.block_size)
    times = np.linspace(0, r.duration_s, 2000)
    inside = ((r.first_token_s[None, :] <= times[:, None])
              & (times[:, None] < r.finish_s[None, :])).sum(axis=1)
    assert inside.max() * per_request <= r.pool.num_blocks
    assert inside.max() == r.pool.num_blocks // per_request  # and the pool is what limits them


def test_littles_law_holds_in_steady_state():
    r = _run(synthetic(3000, 512, 128, qps=8.0, concurrency=None, seed=7,
                       output_spread="uniform:0.5"))
    lo, hi = 0.25 * r.duration_s, 0.75 * r.duration_s
    t = np.linspace(lo, hi, 4000)
    in_system = ((r.send_s[None, :] <= t[:, None]) & (t[:, None] < r.finish_s[None, :])).sum(1)
    arrived = (r.send_s >= lo) & (r.send_s < hi)
    rate = arrived.sum() / (hi - lo)
    latency = r.e2e[arrived].mean()
    assert in_system.mean() == pytest.approx(rate * latency, rel=0.05)


def test_a_higher_rate_never_lowers_latency_percentiles_on_average():
    seeds = range(4)
    rows = []
    for qps in (2.0, 6.0, 12.0, 24.0):
        runs = [_run(synthetic(250, 768, 160, qps=qps, concurrency=None, seed=s))
                for s in seeds]
        rows.append([np.mean([getattr(x.dist(m), p) for x in runs])
                     for m in ("ttft", "tpot", "e2e") for p in ("p50", "p90", "p99")])
    rows_arr = np.array(rows)
    assert np.all(np.diff(rows_arr, axis=0) >= -1e-12)


def test_the_same_seed_reproduces_a_run_exactly():
    def once(seed: int):  # type: ignore[no-untyped-def]
        return _run(synthetic(400, 600, 100, qps=9.0, concurrency=None, seed=seed, burstiness=0.5,
                              prompt_spread="normal:0.3", output_spread="uniform:0.5"))

    a, b, c = once(11), once(11), once(12)
    assert np.array_equal(a.finish_s, b.finish_s) and np.array_equal(a.itl, b.itl)
    assert np.array_equal(a.first_token_s, b.first_token_s)
    assert not np.array_equal(a.finish_s, c.finish_s)


def test_arrivals_follow_vllm_bench_serve_gamma_process():
    rng = np.random.default_rng(0)
    n, rate = 20000, 4.0
    for burstiness in (0.25, 1.0, 4.0):
        t = np.array(gamma_arrivals(n, rate, burstiness, rng))
        gaps = np.diff(np.concatenate(([0.0], t)))
        assert t[-1] == pytest.approx(n / rate)  # rescaled so the last lands at N / rate
        # A gamma with shape k has coefficient of variation 1/sqrt(k).
        assert gaps.std() / gaps.mean() == pytest.approx(1 / math.sqrt(burstiness), rel=0.05)
    assert gamma_arrivals(3, math.inf, 1.0, rng) == [0.0, 0.0, 0.0]


def test_a_trace_gives_lengths_and_arrival_times(tmp_path):
    rows = [{"arrival_s": 0.0, "prompt_tokens": 100, "output_tokens": 5},
            {"arrival_s": 0.5, "prompt_tokens": 300, "output_tokens": 2}]
    j = tmp_path / "t.json"
    j.write_text(json.dumps(rows))
    c = tmp_path / "t.csv"
    c.write_text("arrival_s,prompt_tokens,output_tokens\n0,100,5\n0.5,300,2\n")
    for path in (j, c):
        w = from_trace(str(path), qps=None, concurrency=None)
        assert w.prompt_tokens == (100, 300) and w.output_tokens == (5, 2)
        r = _run(w)
        assert list(r.send_s) == [0.0, 0.5]


def test_every_engine_completes_every_request():
    work = synthetic(300, 900, 120, qps=20.0, concurrency=None, seed=5,
                     prompt_spread="uniform:0.5")
    for name in ("vllm", "sglang", "trtllm", "lmdeploy"):
        r = _run(work, engine=engine_profile(name, ACC))
        assert np.all(np.isfinite(r.finish_s)), name
        assert int(r.outputs.sum()) == 300 * np.mean(work.output_tokens)


_cli = run_cli


def test_cli_json_has_the_documented_keys():
    code, out, _ = _cli(["simulate", "llama-2-7b", "--gpu", "a100-80gb", "--qps", "4",
                         "--requests", "50", "--prompt", "256", "--output", "32",
                         "--slo-ttft", "1s", "--slo-tpot", "50ms", "--json"])
    assert code == 0
    data = json.loads(out)
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_latency_s"):
        assert set(data[key]) == {"mean", "p50", "p90", "p99"}
    for key in ("throughput_tokens_per_s", "requests_per_s", "goodput_requests_per_s", "model",
                "gpu", "config"):
        assert key in data
    assert {"mean", "max", "series"} <= set(data["kv_cache_utilization"])
    assert "series" in data["queue_length"]
    assert data["config"]["engine"] == "vllm" and data["config"]["workload"]["requests"] == 50
    assert data["goodput_requests_per_s"] <= data["requests_per_s"]


def test_cli_text_fits_80_columns():
    code, out, _ = _cli(["simulate", "llama-2-7b", "--gpu", "a100-80gb", "--concurrency", "4",
                         "--requests", "40", "--prompt", "128", "--output", "16"])
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80


@pytest.mark.parametrize("argv, flag", [
    (["--qps", "-1"], "--qps"),
    (["--qps", "abc"], "--qps"),
    ([], "--qps"),
    (["--qps", "1", "--engine", "tgi"], "--engine"),
    (["--qps", "1", "--slo-ttft", "soon"], "--slo-ttft"),
    (["--qps", "1", "--prompt-spread", "weird:1"], "--prompt-spread"),
    (["--qps", "1", "--trace", "/nonexistent.json"], "--trace"),
    (["--qps", "1", "--max-num-batched-tokens", "0"], "--max-num-batched-tokens"),
    (["--qps", "1", "--requests", "0"], "--requests"),
    (["--qps", "1", "--prompt", "900000", "--output", "10"], "--prompt"),
])
def test_bad_flags_exit_2_with_one_line_naming_the_flag(argv, flag):
    code, out, err = _cli(["simulate", "llama-2-7b", "--gpu", "a100-80gb", *argv])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and flag in err


def test_a_cached_prefix_leaves_only_the_rest_of_the_prompt_to_prefill():
    prompt, output, fraction = 1000, 8, 0.5
    work = replace(synthetic(1, prompt, output, qps=1.0, concurrency=None),
                   prefix_fraction=fraction)
    r = _run(work)
    cached = 500 // 16 * 16  # whole 16-token blocks of the shared half: 496 tokens
    host = VLLM.step_overhead_s + VLLM.seq_overhead_s
    # The 504 new tokens attend over the whole 1000-token context.
    assert r.dist("ttft").mean == pytest.approx(
        _pass_s(1, prompt - cached, prompt, decode=False) + host, rel=1e-9)
    no_cache = _run(work, engine=replace(VLLM, prefix_caching=False))
    assert no_cache.dist("ttft").mean == pytest.approx(_pass_s(1, prompt, prompt, False) + host,
                                                       rel=1e-9)


def test_a_shared_prefix_raises_throughput_under_load():
    base = synthetic(400, 2000, 64, qps=20.0, concurrency=None, seed=4)
    plain, shared = _run(base), _run(replace(base, prefix_fraction=0.8))
    assert shared.dist("ttft").p50 < plain.dist("ttft").p50
    assert shared.kv_utilization_mean < plain.kv_utilization_mean


# ---- speculative decoding ---------------------------------------------------------------------

from llmsizer.analysis.serving_sim import speculative_cost, step_cost  # noqa: E402
from llmsizer.serving.speculative import Speculation, expected_tokens, steps_to_reach  # noqa: E402


def test_expected_tokens_per_step_is_leviathan_eq_1():
    # (1 − α^(k+1)) / (1 − α), arXiv 2211.17192 §3.1 Eq. 1, by hand:
    assert expected_tokens(4, 0.8) == pytest.approx((1 - 0.8**5) / 0.2)  # 3.3616
    assert expected_tokens(4, 0.8) == pytest.approx(1 + 0.8 + 0.64 + 0.512 + 0.4096)
    assert expected_tokens(3, 0.6) == pytest.approx(1 + 0.6 + 0.36 + 0.216)  # 2.176
    assert expected_tokens(5, 0.0) == 1.0 and expected_tokens(5, 1.0) == 6.0


def test_a_request_alone_takes_as_many_decode_steps_as_eq_1_says():
    prompt, output = 512, 201
    for alpha, k in ((0.8, 4), (0.6, 3), (0.0, 2)):
        sp = Speculation("eagle", k, alpha)
        r = _run(synthetic(1, prompt, output, qps=1.0, concurrency=None), speculation=sp)
        # one prefill step emits the first token, then ⌊n·E⌋ tokens after n decode steps
        assert r.steps == 1 + steps_to_reach(output - 1, sp.expected_tokens)
        assert r.steps == 1 + math.ceil((output - 1) / sp.expected_tokens - 1e-12)


def test_the_verify_step_is_the_per_op_pass_of_k_plus_one_tokens():
    k, context = 3, 700
    base = step_cost(SPEC, ACC, CFG, EFF, 8192, 8, 0.0, 0.0)
    cost = speculative_cost(base, SPEC, ACC, CFG, EFF, 8192, 8, Speculation("eagle", k, 0.5))
    cost.draft = None  # the target's part alone
    q = k + 1
    # Decode step over a sequence whose first new token sits at position `context`: the target
    # runs q tokens ending at context + q − 1 (forward_pass computes logits for the last one only;
    # verification needs all q, so the head's extra rows are added).
    target = forward_pass(SPEC, ACC, CFG, EFF, 1, q, context + q - 1,
                          topology=_topology(ACC, 8, EFF), decode=True).time_s
    assert cost.step_s(1, context, []) == pytest.approx(
        target + cost.head(q) - cost.head(1), rel=1e-9)


def test_zero_acceptance_is_plain_decoding_plus_wasted_verify_work():
    work = synthetic(1, 800, 100, qps=1.0, concurrency=None)
    plain = _run(work)
    for sp in (Speculation("eagle", 3, 0.0), Speculation("draft", 3, 0.0,
                                                          get_model("llama-3.2-1b"))):
        r = _run(work, speculation=sp)
        assert r.steps == plain.steps  # one token per step, as without drafting
        assert r.dist("ttft").mean > plain.dist("ttft").mean  # the drafter prefills too
        assert r.dist("tpot").mean > plain.dist("tpot").mean  # k + 1 tokens verified per step
        assert r.pool.num_blocks < plain.pool.num_blocks  # drafter weights and KV share the pool


def test_speculation_helps_most_at_low_batch():
    sp = Speculation("eagle", 3, 0.7)
    gain = {}
    for clients in (1, 128):
        work = synthetic(clients * 4, 1024, 128, qps=None, concurrency=clients, seed=1)
        gain[clients] = (_run(work, speculation=sp).throughput_tokens_per_s
                         / _run(work).throughput_tokens_per_s)
    assert gain[1] > 1.5  # E = 2.53 tokens per step for a little more than one step's time
    assert gain[1] > gain[128]  # at batch 128 the verify tokens cost compute


def test_speculative_kv_blocks_stay_within_the_pool_under_preemption():
    cfg = _small_pool_cfg(20_000)
    sp = Speculation("eagle", 4, 0.8)
    for name in ("vllm", "sglang", "trtllm"):
        eng = engine_profile(name, ACC)
        r = _run(synthetic(200, 1500, 400, qps=50.0, concurrency=None, seed=1), engine=eng,
                 cfg=cfg if name == "vllm" else CFG, speculation=sp)
        assert r.kv_utilization_max <= 1.0
        assert np.all(np.isfinite(r.finish_s)) and np.all(r.first_token_s <= r.finish_s)
        if name == "vllm":
            assert r.preemptions > 0


# ---- inverse questions ------------------------------------------------------------------------

def test_find_max_rate_brackets_the_answer_between_simulated_rates():
    code, out, _ = _cli(["simulate", "llama-2-7b", "--gpu", "a100-80gb", "--requests", "150",
                         "--prompt", "512", "--output", "64", "--find", "max-rate",
                         "--slo-ttft", "500ms", "--slo-tpot", "40ms", "--json"])
    assert code == 0
    d = json.loads(out)
    best = d["max_rate_requests_per_s"]
    assert best > 0 and d["percentile"] == 90
    probes = d["probes"]
    assert any(p["qps"] == best and p["meets"] for p in probes)
    # every probed rate at or below the answer meets, the next one above it misses
    assert all(p["meets"] for p in probes if p["qps"] <= best)
    above = [p["qps"] for p in probes if p["qps"] > best]
    assert above and min(above) <= best * 1.011 + 1e-9
    at = d["at_answer"]
    assert at["ttft_s"]["p90"] <= 0.5 + 1e-12 and at["config"]["workload"]["qps"] == best


def test_find_min_gpus_needs_one_replica_fewer_to_miss():
    code, out, _ = _cli(["simulate", "llama-2-7b", "--gpu", "a100-80gb", "--requests", "100",
                         "--prompt", "512", "--output", "64", "--qps", "30", "--find",
                         "min-gpus", "--slo-ttft", "1s", "--slo-tpot", "50ms", "--json"])
    assert code == 0
    d = json.loads(out)
    n = d["replicas"]
    assert n >= 2 and d["gpus"] == n
    meets = {p["replicas"]: p["meets"] for p in d["probes"]}
    assert meets[n] and not meets[n - 1]


def test_find_memory_questions_match_the_pool():
    code, out, _ = _cli(["simulate", "llama-2-7b", "--gpu", "a100-80gb", "--prompt", "3000",
                         "--output", "1000", "--find", "max-seqs", "--json"])
    d = json.loads(out)
    pool = kv_pool(SPEC, ACC, CFG, VLLM)
    assert code == 0 and d["kv_pool_tokens"] == pool.tokens
    assert d["max_concurrent_sequences"] == pool.num_blocks // math.ceil(4000 / 16)
    assert d["max_context_tokens"] == min(pool.tokens, SPEC.max_seq_len)


@pytest.mark.parametrize("argv, flag", [
    (["--qps", "1", "--speculative", "medusa"], "--speculative"),
    (["--qps", "1", "--speculative", "eagle", "--acceptance", "1.5"], "--acceptance"),
    (["--qps", "1", "--spec-tokens", "3"], "--spec-tokens"),
    (["--find", "max-rate"], "--find"),
    (["--find", "min-gpus", "--slo-ttft", "1s"], "--find"),
    (["--find", "fastest"], "--find"),
])
def test_bad_speculative_and_find_flags_exit_2(argv, flag):
    code, out, err = _cli(["simulate", "llama-2-7b", "--gpu", "a100-80gb", *argv])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and flag in err


# ---- disaggregated prefill/decode ---------------------------------------------------------------

def _disagg(work: Workload, x: int = 1, y: int = 2, gpus_per_node: int = 8):  # type: ignore[no-untyped-def]
    from llmsizer.serving.disaggregated import Disaggregation

    return _run(work, disaggregation=Disaggregation(x, y, 1, 1), gpus_per_node=gpus_per_node)


# Llama-2-7B caches K and V of 32 heads x 128 in 32 layers, 2 bytes each: 524,288 B per token.
LLAMA2_KV_PER_TOKEN = 2 * 32 * 32 * 128 * 2


def test_disaggregated_ttft_is_at_least_prefill_plus_transfer():
    r = _disagg(synthetic(300, 1024, 64, qps=6.0, concurrency=None, seed=3,
                          prompt_spread="uniform:0.5"))
    info = r.disaggregation
    floor = info.prefill_done_s + info.transfer.transfer_s - r.send_s
    assert np.all(r.ttft >= floor - 1e-12)
    assert np.all(r.first_token_s >= info.decode_arrival_s - 1e-12)
    assert np.all(info.decode_arrival_s >= info.prefill_done_s + info.transfer.transfer_s - 1e-12)


def test_a_request_alone_pays_prefill_then_transfer_then_one_token_on_the_decode_instance():
    prompt = 1000
    r = _disagg(synthetic(1, prompt, 2, qps=1.0, concurrency=None))
    host = VLLM.step_overhead_s + VLLM.seq_overhead_s
    link = ACC.intra_node_link_bytes_s / 2 * EFF.comm_efficiency  # one direction, NCCL's share
    transfer = prompt * LLAMA2_KV_PER_TOKEN / link + EFF.collective_latency_s
    ttft = (_pass_s(1, prompt, prompt, decode=False) + host + transfer
            + _pass_s(1, 1, prompt, decode=False) + host)  # the last prompt token, recomputed
    assert r.disaggregation.transfer.bytes_per_token == LLAMA2_KV_PER_TOKEN
    assert r.disaggregation.transfer.transfer_s[0] == pytest.approx(transfer, rel=1e-9)
    assert r.dist("ttft").mean == pytest.approx(ttft, rel=1e-9)


def test_pools_larger_than_a_node_move_the_kv_over_the_network():
    prompt = 2048
    r = _disagg(synthetic(1, prompt, 4, qps=1.0, concurrency=None), gpus_per_node=2)
    nic = 400e9 / 8 * EFF.inter_node_efficiency  # 400 Gb/s per GPU
    assert r.disaggregation.transfer.link == "network"
    assert r.disaggregation.transfer.transfer_s[0] == pytest.approx(
        prompt * LLAMA2_KV_PER_TOKEN / nic + 2 * EFF.collective_latency_s, rel=1e-9)


def test_disaggregation_serves_every_request_once_and_reports_both_pools():
    work = synthetic(400, 512, 128, qps=8.0, concurrency=None, seed=5,
                     output_spread="uniform:0.5")
    r = _disagg(work, x=2, y=3)
    info = r.disaggregation
    assert np.all(np.isfinite(r.finish_s)) and np.all(r.finish_s >= r.first_token_s)
    assert r.outputs.sum() == sum(work.output_tokens)
    assert info.prefill.instances == 2 and info.decode.instances == 3
    for pool in (info.prefill, info.decode):
        assert 0 < pool.busy_fraction <= 1 and 0 <= pool.kv_cache_utilization <= 1
    # every prompt is prefilled once: the prefill pool computes Σ prompt tokens, no more
    assert info.prefill.preemptions == 0


def test_cli_disaggregate_json_and_text():
    argv = ["simulate", "llama-2-7b", "--gpu", "a100-80gb", "--qps", "4", "--requests", "60",
            "--prompt", "512", "--output", "32", "--disaggregate", "1P:2D"]
    code, out, _ = _cli([*argv, "--json"])
    assert code == 0
    data = json.loads(out)
    d = data["disaggregated"]
    assert d["prefill_instances"] == 1 and d["decode_instances"] == 2
    assert data["config"]["gpus"] == 3
    assert {"busy_fraction", "kv_cache_utilization"} <= set(d["prefill_pool"])
    assert d["kv_transfer"]["kv_bytes_per_prompt_token"] == LLAMA2_KV_PER_TOKEN
    code, out, _ = _cli(argv)
    assert code == 0 and "KV transfer over" in out
    assert max(len(line) for line in out.splitlines()) <= 80


# ---- data-parallel attention with expert parallelism -------------------------------------------

def test_dp_attention_over_one_rank_is_the_plain_instance():
    from llmsizer.serving.dp_attention import DpAttention

    spec, acc = get_model("qwen1.5-moe-a2.7b"), get_accelerator("h100")
    eff = Efficiency.for_accelerator(acc, workload="serving")
    work = synthetic(200, 512, 64, qps=10.0, concurrency=None, seed=1)
    eng = engine_profile("vllm", acc)
    a = simulate(spec, acc, CFG, eng, work, eff=eff)
    b = simulate(spec, acc, CFG, eng, work, eff=eff, dp_attention=DpAttention(1))
    assert np.array_equal(a.first_token_s, b.first_token_s)
    assert np.array_equal(a.finish_s, b.finish_s)


def test_dp_attention_rank_holds_whole_attention_and_a_share_of_the_experts():
    from llmsizer.analysis.inference import serving_memory
    from llmsizer.serving.dp_attention import DpAttention

    spec, acc = get_model("qwen1.5-moe-a2.7b"), get_accelerator("h100")
    eng = engine_profile("vllm", acc)
    n = 4
    moe = spec.moe
    # routed experts: gate, up and down of h x f_e each, in every layer, bf16
    experts = spec.num_layers * moe.num_experts * 3 * spec.hidden_size * moe.expert_ffn_size * 2
    whole = serving_memory(spec, acc, replace(CFG, prefill_chunk=eng.max_num_batched_tokens // 1),
                           1, 16).weights
    pool = kv_pool(spec, acc, replace(CFG, tp=n), eng, dp_attention=DpAttention(n))
    assert pool.weights == pytest.approx(whole - experts * (1 - 1 / n), rel=1e-12)
    one = kv_pool(spec, acc, CFG, eng)
    assert pool.num_blocks > one.num_blocks * (n - 1)  # n pools, each with less weight beside it


def test_dp_attention_pays_two_all_to_alls_per_moe_layer():
    from llmsizer.serving.dp_attention import DpAttention, DpEpStepCost

    spec, acc = get_model("qwen1.5-moe-a2.7b"), get_accelerator("h100")
    eff = Efficiency.for_accelerator(acc, workload="serving")
    n = 4
    cost = DpEpStepCost(spec, acc, CFG, eff, DpAttention(n), max_tokens=4096)
    link = acc.intra_node_link_bytes_s / 2 * eff.comm_efficiency
    for t, a2a in zip(cost.grid, cost.a2a_s, strict=True):
        per_rank = t * spec.moe.top_k * spec.hidden_size * 2  # bf16 activations to top-k experts
        one = (n - 1) / n * per_rank / link + eff.collective_latency_s
        assert a2a == pytest.approx(2 * spec.num_layers * one, rel=1e-9)


def test_dp_attention_holds_more_mla_tokens_than_tensor_parallel_attention():
    spec = get_model("deepseek-v2-lite")
    base = ["simulate", "deepseek-v2-lite", "--gpu", "h100", "--tp", "4", "--qps", "4",
            "--requests", "40", "--prompt", "512", "--output", "32", "--json"]
    code, tp_out, _ = _cli(base)
    code2, dp_out, _ = _cli([*base, "--dp-attention"])
    assert code == 0 and code2 == 0
    tp_tokens = json.loads(tp_out)["config"]["kv_pool_tokens"]
    dp = json.loads(dp_out)
    # TP replicates MLA's latent on every rank; DP ranks each keep their own requests' latents
    assert dp["config"]["kv_pool_tokens"] > 3 * tp_tokens
    assert dp["dp_attention"]["ranks"] == 4 and dp["dp_attention"]["ep"] == 4
    assert spec.mla is not None


@pytest.mark.parametrize("argv, flag", [
    (["--qps", "1", "--disaggregate", "0P:1D"], "--disaggregate"),
    (["--qps", "1", "--disaggregate", "two"], "--disaggregate"),
    (["--qps", "1", "--prefill-tp", "2"], "--prefill-tp"),
    (["--concurrency", "4", "--disaggregate", "1P:1D"], "--concurrency"),
    (["--qps", "1", "--disaggregate", "1P:1D", "--replicas", "2"], "--replicas"),
    (["--qps", "1", "--dp-attention"], "--dp-attention"),
    (["--qps", "1", "--ep", "2"], "--ep"),
])
def test_bad_disaggregation_and_dp_attention_flags_exit_2(argv, flag):
    code, out, err = _cli(["simulate", "llama-2-7b", "--gpu", "a100-80gb", *argv])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and flag in err


def test_ep_other_than_tp_is_refused():
    code, out, err = _cli(["simulate", "qwen1.5-moe-a2.7b", "--gpu", "h100", "--tp", "2",
                           "--qps", "1", "--dp-attention", "--ep", "4"])
    assert code == 2 and "--ep" in err and len(err.strip().splitlines()) == 1

"""plan-serve --disaggregate: disaggregated prefill/decode layouts searched beside colocated
replicas and ranked by the same goodput per GPU.

The expectations come from arithmetic on the workloads, written out in each test, and from
re-simulating the chosen layouts through `llmsizer simulate` (not through the planner)."""

from __future__ import annotations

import json

import pytest
from clirun import run_cli

# Prefill-heavy: 8k-token prompts, 128 output tokens, 4 req/s, TPOT SLO 12 ms.
PREFILL_HEAVY = ["plan-serve", "llama-3.1-8b", "--gpu", "h100", "--gpus", "4", "--prompt", "8k",
                 "--output", "128", "--qps", "4", "--ttft-slo", "2s", "--tpot-slo", "12ms",
                 "--requests", "200"]
# Decode-heavy: 128-token prompts, 1024 output tokens, 8 req/s, loose SLOs.
DECODE_HEAVY = ["plan-serve", "llama-3.1-8b", "--gpu", "h100", "--gpus", "4", "--prompt", "128",
                "--output", "1024", "--qps", "8", "--ttft-slo", "5s", "--tpot-slo", "100ms",
                "--requests", "200"]


_cli = run_cli


@pytest.fixture(scope="module")
def prefill_heavy() -> dict:
    code, out, _ = _cli([*PREFILL_HEAVY, "--disaggregate", "auto", "--top", "100", "--json"])
    assert code == 0
    return json.loads(out)


def test_a_prefill_heavy_stream_under_a_tight_tpot_slo_is_served_disaggregated(prefill_heavy):
    """Prefill of one 8k prompt on an 8B model is ≈ 2 · 8e9 · 8192 ≈ 1.3e14 FLOP, ~0.2 s on an
    H100 at ~65 % of its 989 TFLOP/s; at 4 req/s that is ~0.8 GPU-seconds of prefill every second.
    Colocated, those prefill chunks ride in the decode steps, so decode steps of a few ms become
    steps of tens of ms a large share of the time, and a 12 ms TPOT at P90 needs the prefill
    spread thinly over many GPUs; disaggregated, the decode pool's steps carry no prefill
    (DistServe, arXiv 2401.09670 §2.2)."""
    best = prefill_heavy["plans"][0]
    assert best["layout"] == "disaggregated"
    assert best["ttft_s"] <= 2.0 and best["tpot_s"] <= 0.012
    assert any(p["layout"] == "colocated" for p in prefill_heavy["plans"][1:])


def test_a_decode_heavy_stream_under_loose_slos_stays_colocated():
    """128-token prompts at 8 req/s are ~1,000 prefill tokens/s, about 1 % of what one H100
    prefills; a disaggregated layout still needs a whole GPU for its prefill pool besides the
    decode pool (≥ 2 GPUs), while one colocated instance does both on the GPU decoding anyway."""
    code, out, _ = _cli([*DECODE_HEAVY, "--disaggregate", "auto", "--top", "100", "--json"])
    assert code == 0
    data = json.loads(out)
    best = data["plans"][0]
    assert best["layout"] == "colocated" and best["disaggregated"] is None
    split = [p for p in data["plans"] if p["layout"] == "disaggregated"]
    assert split, "disaggregated layouts were searched and some meet the SLOs"
    assert all(p["gpus"] >= 2 for p in split)
    assert best["gpus"] < min(p["gpus"] for p in split)


def _simulate(plan: dict, argv: list[str]) -> dict:
    """The plan re-run through `llmsizer simulate` with the planner's request count (at least
    200 per instance of the larger pool / per replica)."""
    flags = dict(zip(argv[2::2], argv[3::2], strict=False))
    d = plan["disaggregated"]
    per = max(d["prefill_instances"], d["decode_instances"]) if d else plan["replicas"]
    cmd = ["simulate", argv[1], "--gpu", flags["--gpu"], "--prompt", flags["--prompt"],
           "--output", flags["--output"], "--qps", flags["--qps"], "--slo-ttft",
           flags["--ttft-slo"], "--slo-tpot", flags["--tpot-slo"], "--requests",
           str(max(int(flags["--requests"]), 200 * per)), "--max-num-seqs",
           str(plan["max_num_seqs"]), "--max-num-batched-tokens",
           str(plan["max_num_batched_tokens"]), "--json"]
    if d:
        cmd += ["--disaggregate", d["ratio"], "--prefill-tp", str(d["prefill_tp"]),
                "--decode-tp", str(d["decode_tp"])]
    else:
        cmd += ["--tp", str(plan["tp"]), "--pp", str(plan["pp"]), "--replicas",
                str(plan["replicas"])]
    code, out, _ = _cli(cmd)
    assert code == 0
    return json.loads(out)


def _per_gpu(sim: dict) -> float:
    return sim["goodput_requests_per_s"] / sim["config"]["gpus"]


def test_the_search_returns_the_better_of_two_layouts_simulated_by_hand(prefill_heavy):
    plans = prefill_heavy["plans"]
    split = next(p for p in plans if p["layout"] == "disaggregated")
    coloc = next(p for p in plans if p["layout"] == "colocated")
    a, b = _simulate(split, PREFILL_HEAVY), _simulate(coloc, PREFILL_HEAVY)
    for sim, plan in ((a, split), (b, coloc)):
        assert sim["config"]["gpus"] == plan["gpus"]
        assert sim["ttft_s"]["p90"] <= 2.0 and sim["tpot_s"]["p90"] <= 0.012
    # ranked as the planner documents: goodput per GPU, then fewer GPUs
    better = split if (_per_gpu(a), -split["gpus"]) > (_per_gpu(b), -coloc["gpus"]) else coloc
    assert plans[0] == better  # the first of each kind: the overall first is one of them


def test_the_chosen_ratio_is_the_fewest_instances_that_meet_the_slos(prefill_heavy):
    best = prefill_heavy["plans"][0]
    d = best["disaggregated"]
    for dx, dy in ((1, 0), (0, 1)):
        x, y = d["prefill_instances"] - dx, d["decode_instances"] - dy
        if min(x, y) < 1:
            continue
        fewer = dict(best, disaggregated=dict(d, ratio=f"{x}P:{y}D", prefill_instances=x,
                                              decode_instances=y))
        sim = _simulate(fewer, PREFILL_HEAVY)
        assert not (sim["ttft_s"]["p90"] <= 2.0 and sim["tpot_s"]["p90"] <= 0.012), (x, y)


def test_the_text_shows_the_chosen_ratio():
    code, out, _ = _cli([*PREFILL_HEAVY, "--disaggregate", "auto"])
    assert code == 0
    best = [ln for ln in out.splitlines() if ln.startswith("best:")][0]
    assert "disaggregated" in best and "P:" in best and "D," in best


def test_json_keeps_the_existing_keys_and_adds_the_layout(prefill_heavy):
    old = {"tp", "pp", "replicas", "gpus", "max_num_seqs", "max_num_batched_tokens", "ttft_s",
           "tpot_s", "goodput_requests_per_s", "goodput_requests_per_s_per_gpu",
           "output_tokens_per_s", "output_tokens_per_s_per_gpu", "kv_pool_tokens_per_instance"}
    assert prefill_heavy["disaggregate"] == "auto"
    for p in prefill_heavy["plans"]:
        assert old | {"layout", "disaggregated"} <= set(p)
        d = p["disaggregated"]
        if d is None:
            assert p["gpus"] == p["tp"] * p["pp"] * p["replicas"]
        else:
            assert p["tp"] is None and p["replicas"] is None
            assert p["gpus"] == d["prefill_instances"] * d["prefill_tp"] + \
                d["decode_instances"] * d["decode_tp"]
            assert d["ratio"] == f"{d['prefill_instances']}P:{d['decode_instances']}D"


def test_off_is_the_default_and_searches_no_disaggregated_layout():
    code, out, _ = _cli([*DECODE_HEAVY, "--json", "--top", "100"])
    data = json.loads(out)
    assert code == 0 and data["disaggregate"] == "off"
    assert all(p["layout"] == "colocated" for p in data["plans"])


def test_only_searches_disaggregated_layouts_alone():
    code, out, _ = _cli([*DECODE_HEAVY, "--disaggregate", "only", "--json", "--top", "100"])
    data = json.loads(out)
    assert code == 0 and data["plans"]
    assert all(p["layout"] == "disaggregated" for p in data["plans"])


def test_a_bad_disaggregate_value_exits_2_naming_the_flag():
    code, _, err = _cli([*DECODE_HEAVY, "--disaggregate", "sometimes"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--disaggregate" in err and "sometimes" in err and "auto" in err


def test_exporting_a_disaggregated_best_is_refused_naming_the_flag():
    code, _, err = _cli([*PREFILL_HEAVY, "--disaggregate", "only", "--export", "vllm"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--export" in err

"""The pipeline schedule simulator: the bubbles of Narayanan et al. 2021 sec. 2.2 come out of
the passes' dependencies, and every pass waits for what it needs."""

from __future__ import annotations

import json

import pytest

from llmsizer.analysis.pipeline_schedule import device_order, simulate
from llmsizer.charts import charts_for, pipeline_timeline
from llmsizer.cli import main

F, B = 1.0, 2.0  # one micro-batch's forward and backward on one stage (backward = 2 forward)


def equal(pp):
    return [F] * pp, [B] * pp


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize(("pp", "m"), [(2, 1), (2, 8), (4, 3), (4, 16), (8, 8), (8, 64)])
def test_bubble_is_p_minus_1_over_m_of_the_ideal_time(schedule, pp, m):
    # Narayanan et al. 2021 sec. 2.2.1: bubble time fraction = (p - 1) / m
    t = simulate(schedule, pp, m, *equal(pp))
    ideal = m * (F + B)
    assert t.makespan_s == pytest.approx(ideal + (pp - 1) * (F + B))
    assert t.bubble_fraction == pytest.approx((pp - 1) / m)


@pytest.mark.parametrize(("pp", "v", "m"), [(2, 2, 4), (4, 2, 8), (4, 4, 16), (8, 2, 64),
                                            (4, 3, 12)])
def test_interleaving_divides_the_bubble_by_v(pp, v, m):
    # ibid. sec. 2.2.2: with v model chunks per device the bubble is (p - 1) / (v·m)
    t = simulate("interleaved", pp, m, *equal(pp), virtual_stages=v)
    assert t.bubble_fraction == pytest.approx((pp - 1) / (v * m))
    assert len(t.events) == 2 * pp * v * m


def test_gpipe_with_unequal_stages_is_a_flow_shop():
    # identical jobs through stages in order: sum of stage times + (m-1) × the slowest stage,
    # for the forwards and again (stages reversed) for the backwards, GPipe running them apart
    fwd, bwd, m = [1.0, 3.0, 2.0], [2.0, 6.0, 4.0], 5
    t = simulate("gpipe", 3, m, fwd, bwd)
    forward_phase = sum(fwd) + (m - 1) * max(fwd)
    last_forward = max(e.end_s for e in t.events if e.kind == "F" and e.stage == 2)
    assert last_forward == pytest.approx(forward_phase)
    assert t.makespan_s == pytest.approx(sum(fwd) + sum(bwd) + (m - 1) * max(
        f + b for f, b in zip(fwd, bwd, strict=True)))


SCHEDULES = [("gpipe", 4, 1, 6), ("1f1b", 4, 1, 6), ("1f1b", 4, 1, 2), ("interleaved", 4, 2, 8),
             ("interleaved", 2, 3, 4)]


@pytest.mark.parametrize(("schedule", "pp", "v", "m"), SCHEDULES)
def test_each_micro_batch_runs_forward_before_backward_on_every_chunk(schedule, pp, v, m):
    t = simulate(schedule, pp, m, *equal(pp), virtual_stages=v)
    for e in t.events:
        if e.kind == "B":
            (fwd,) = [f for f in t.events if f.kind == "F" and f.stage == e.stage
                      and f.chunk == e.chunk and f.micro_batch == e.micro_batch]
            assert fwd.end_s <= e.start_s


@pytest.mark.parametrize(("schedule", "pp", "v", "m"), SCHEDULES)
def test_passes_wait_for_the_neighbouring_stage(schedule, pp, v, m):
    t = simulate(schedule, pp, m, [1.0, 1.5, 0.5, 2.0][:pp], [2.0, 3.0, 1.0, 4.0][:pp], v)
    at = {(e.kind, e.micro_batch, e.chunk * pp + e.stage): e for e in t.events}
    last = pp * v - 1
    for (kind, i, k), e in at.items():
        if kind == "F" and k > 0:  # the previous (virtual) stage's forward has ended
            assert at["F", i, k - 1].end_s <= e.start_s
        if kind == "B" and k < last:  # the next stage's backward has ended
            assert at["B", i, k + 1].end_s <= e.start_s
        if kind == "B" and k == last:
            assert at["F", i, k].end_s <= e.start_s


@pytest.mark.parametrize(("schedule", "pp", "v", "m"), SCHEDULES)
def test_a_device_runs_one_pass_at_a_time_and_every_pass_once(schedule, pp, v, m):
    t = simulate(schedule, pp, m, *equal(pp), virtual_stages=v)
    for s in range(pp):
        mine = sorted((e for e in t.events if e.stage == s), key=lambda e: e.start_s)
        assert len(mine) == 2 * v * m
        assert all(a.end_s <= b.start_s for a, b in zip(mine, mine[1:], strict=False))
        assert len({(e.kind, e.micro_batch, e.chunk) for e in mine}) == 2 * v * m


def in_flight_peak(t, stage):
    """Most micro-batches whose activations a stage holds at once: from the start of a forward
    to the end of its backward (a release at the instant of a new forward counts first)."""
    marks = sorted([(e.start_s, 1) for e in t.events if e.stage == stage and e.kind == "F"]
                   + [(e.end_s, -1) for e in t.events if e.stage == stage and e.kind == "B"])
    held = peak = 0
    for _, d in marks:
        held += d
        peak = max(peak, held)
    return peak


@pytest.mark.parametrize("m", [2, 16])
def test_1f1b_holds_at_most_p_minus_s_micro_batches_and_gpipe_all(m):
    # ibid. sec. 2.2.1: 1F1B limits outstanding micro-batches to the pipeline depth
    pp = 4
    one = simulate("1f1b", pp, m, *equal(pp))
    gpipe = simulate("gpipe", pp, m, *equal(pp))
    for s in range(pp):
        assert in_flight_peak(one, s) == min(m, pp - s)
        assert in_flight_peak(gpipe, s) == m


def test_1f1b_order_warms_up_then_alternates():
    assert device_order("1f1b", 0, 3, 4) == [
        ("F", 0, 0), ("F", 1, 0), ("F", 2, 0), ("B", 0, 0), ("F", 3, 0), ("B", 1, 0),
        ("B", 2, 0), ("B", 3, 0)]
    assert device_order("1f1b", 2, 3, 2) == [("F", 0, 0), ("B", 0, 0), ("F", 1, 0), ("B", 1, 0)]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        simulate("1f1b", 2, 4, [1.0], [2.0])
    with pytest.raises(ValueError):
        simulate("interleaved", 4, 6, *equal(4), virtual_stages=2)  # m not a multiple of pp
    with pytest.raises(ValueError):
        simulate("zero-bubble", 2, 4, *equal(2))  # type: ignore[arg-type]


# -- the chart ------------------------------------------------------------------------------------

PP_TRAIN = ["train", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--tp", "2", "--pp", "4",
            "--global-batch", "16"]


def train_json(argv, capsys):
    assert main([*argv, "--json"]) in (0, 3)
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("schedule", ["1f1b", "gpipe", "interleaved:2"])
def test_timeline_spans_the_step_models_compute_bubble_and_parallel_comm(schedule, capsys):
    # The step model: (m + (p-1)/V) slots of one micro-batch; the simulated timeline must end
    # where compute + bubble + tensor/expert/context-parallel communication does.
    data = train_json([*PP_TRAIN, "--schedule", schedule], capsys)
    spec = pipeline_timeline(data)
    bars = spec["layer"][0]["data"]["values"]
    parts = data["step_time_breakdown_s"]
    expected = (parts["compute"] + parts["pipeline_bubble"] + parts["tp_comm"]
                + parts["ep_comm"] + parts["cp_comm"])
    assert max(b["end"] for b in bars) - min(b["start"] for b in bars) == pytest.approx(expected)
    v = 2 if schedule.startswith("interleaved") else 1
    assert len(bars) == 2 * 4 * v * data["parallelism"]["grad_accum"]
    assert {b["stage"] for b in bars} == {0, 1, 2, 3}


def test_timeline_splits_each_slot_1_to_2_and_says_so(capsys):
    data = train_json(PP_TRAIN, capsys)
    bars = pipeline_timeline(data)["layer"][0]["data"]["values"]
    fwd = next(b["end"] - b["start"] for b in bars if b["pass"] == "forward pass")
    bwd = next(b["end"] - b["start"] for b in bars if b["pass"] == "backward pass")
    assert bwd == pytest.approx(2 * fwd)
    assert "1:2" in pipeline_timeline(data)["description"]


def test_train_charts_include_the_timeline_only_with_pipelining(capsys):
    with_pp = charts_for("train", train_json(PP_TRAIN, capsys))
    without = charts_for("train", train_json(["train", "llama-2-7b", "--gpu", "a100", "--gpus",
                                              "8", "--global-batch", "16"], capsys))
    assert len(with_pp) == len(without) + 1
    assert with_pp[-1]["title"].startswith("Pipeline schedule: 1F1B, pp=4")
    shown = float(with_pp[-1]["title"].rsplit(" ", 1)[1].rstrip("%"))
    assert shown == pytest.approx(100 * (4 - 1) / 16, abs=0.06)  # 16 micro-batches


def test_long_steps_show_their_first_micro_batches(capsys):
    data = train_json([*PP_TRAIN[:-1], "2048"], capsys)  # dp 1: 2048 micro-batches
    spec = pipeline_timeline(data)
    micro_batches = len(spec["layer"][0]["data"]["values"]) // (2 * 4)
    assert micro_batches < 2048 and str(micro_batches) in spec["description"]


def test_plot_svg_draws_a_bar_per_pass(tmp_path, capsys):
    import xml.etree.ElementTree as ET

    out = tmp_path / "t.svg"
    assert main([*PP_TRAIN, "--plot", str(out)]) == 0
    root = ET.fromstring(out.read_text("utf-8"))
    svg = "{http://www.w3.org/2000/svg}"
    charts = root.findall(svg + "g")
    assert len(charts) == 3
    passes = [e for e in charts[2].iter(svg + "rect") if e.get("class") == "mark-bar"]
    assert len(passes) == 2 * 4 * 16  # dp 1: 16 micro-batches, each F and B on 4 stages
    assert any(e.get("class") == "chart-note" for e in charts[2].iter(svg + "text"))

"""The validation runner and the calibration commands."""

import json

import pytest

from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.training import Cluster, train_step
from llmsizer.catalog import get_accelerator, get_model
from llmsizer.cli import main
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import optimizer, training_precision
from llmsizer.validation.cases import CaseError, load_cases, split_of
from llmsizer.validation.runner import run

CASE = {
    "id": "synthetic-llama2-7b", "source": "hand-made for the test", "model": {"catalog":
                                                                                "llama-2-7b"},
    "gpu": "a100-sxm-80gb", "gpus": 8, "gpus_per_node": 8, "tp": 1, "pp": 1, "dp": 8, "cp": 1,
    "ep": 1, "zero": 1, "sequence_parallel": False, "recompute": "none", "micro_batch": 1,
    "global_batch": 32, "seq": 2048, "schedule": "1f1b", "precision": "mixed",
}


def write(tmp_path, cases, name="training.json"):
    path = tmp_path / name
    path.write_text(json.dumps(cases))
    return path


def predicted_step(eff):
    par = Parallelism(dp=8, zero=1, micro_batch=1, grad_accum=4)
    r = train_step(get_model("llama-2-7b"), par, training_precision("mixed"), optimizer("adam"),
                   2048, Cluster(get_accelerator("a100")), eff)
    return r.time.total_s


def test_a_case_measured_at_the_prediction_has_zero_error(tmp_path):
    eff = Efficiency()
    case = CASE | {"measured": {"step_time_s": predicted_step(eff)}}
    report = run(lambda acc, workload: eff, load_cases("training", write(tmp_path, [case])))
    (row,) = report.rows
    assert row.error == pytest.approx(0.0, abs=1e-12)


def test_tokens_per_second_become_the_step_time_they_imply(tmp_path):
    eff = Efficiency()
    case = CASE | {"measured": {"tokens_per_s_per_gpu": 2000.0}}
    (row,) = run(lambda acc, workload: eff, load_cases("training", write(tmp_path, [case]))).rows
    assert row.measured == pytest.approx(32 * 2048 / (2000.0 * 8))
    assert row.error == pytest.approx((predicted_step(eff) - row.measured) / row.measured)


@pytest.mark.parametrize("mutate,expect", [
    (lambda c: c.pop("gpu"), "missing field 'gpu'"),
    (lambda c: c.update(tp=0), "field 'tp' = 0 must be a positive integer"),
    (lambda c: c.update(model="llama"), "field 'model' must be"),
    (lambda c: c.update(measured={}), "field 'measured' must be a non-empty object"),
])
def test_malformed_case_names_the_file_the_case_and_the_field(tmp_path, mutate, expect):
    case = CASE | {"measured": {"step_time_s": 1.0}}
    mutate(case)
    path = write(tmp_path, [case])
    with pytest.raises(CaseError) as e:
        load_cases("training", path)
    assert str(path) in str(e.value) and "synthetic-llama2-7b" in str(e.value)
    assert expect in str(e.value)


def test_broken_case_file_and_duplicates(tmp_path):
    bad = tmp_path / "training.json"
    bad.write_text('[{"id": 1,,}]')
    with pytest.raises(CaseError, match="broken JSON at line 1"):
        load_cases("training", bad)
    case = CASE | {"measured": {"step_time_s": 1.0}}
    with pytest.raises(CaseError, match="duplicate id"):
        load_cases("training", write(tmp_path, [case, case]))


def test_the_split_is_declared_by_id_and_both_halves_are_used():
    cases = load_cases("training") + load_cases("inference")
    assert all(c.split == split_of(c.id) for c in cases)
    fit = sum(c.split == "fit" for c in cases)
    assert 0.3 < fit / len(cases) < 0.7


def test_every_packaged_case_is_cited_and_loads():
    for c in load_cases("training") + load_cases("inference"):
        assert len(c.source) > 20


def test_validate_cli_prints_the_summary(capsys):
    assert main(["validate", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| training step time | holdout |" in out
    assert "| inference throughput | fit |" in out


def test_calibrate_from_a_gemm_benchmark(capsys, tmp_path):
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--gpu", "a100", "--gemm-tflops", "250", "-o", str(out)]) == 0
    cal = json.loads(out.read_text())
    assert cal["matmul_ceiling"] == pytest.approx(250 / 312)
    assert cal["gpu"] == "a100-sxm-80gb"


def test_calibrate_from_a_measured_mfu_reproduces_it(capsys, tmp_path):
    out = tmp_path / "cal.json"
    train = "llama-2-7b --gpus 8 --zero 1 --global-batch 64"
    assert main(["calibrate", "--gpu", "a100", "--train", train, "--measured-mfu", "0.45",
                 "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", *train.split(), "--gpu", "a100", "--calibration", str(out),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mfu"] == pytest.approx(0.45, abs=1e-4)


@pytest.mark.parametrize("argv,expect", [
    (["calibrate", "--gpu", "a100", "--gemm-tflops", "400"], "gemm-tflops=400"),
    (["calibrate", "--gpu", "a100"], "calibrate='nothing'"),
    (["calibrate", "--gpu", "a100", "--train", "llama-2-7b --gpus 8", "--measured-mfu", "0.99"],
     "measured="),
    (["train", "llama-2-7b", "--gpu", "a100", "--calibration", "/nope.json"], "calibration="),
])
def test_calibration_bad_input_is_one_line(capsys, argv, expect):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expect in err and len(err.strip().splitlines()) == 1


def test_leave_one_source_out_is_computed_once_per_process_for_the_same_cases():
    import copy

    from llmsizer.validation.calibrate import family_of, leave_one_source_out

    cases = load_cases("training")
    fams = ("narayanan2021", "korthikanti2022")
    small = [c for f in fams for c in [c for c in cases if family_of(c) == f][:2]]
    assert {family_of(c) for c in small} == set(fams)
    first = leave_one_source_out(small, "training")
    assert leave_one_source_out(list(small), "training") is first
    # other data: computed afresh (a measured value twice as slow is predicted twice as wrong)
    changed = copy.deepcopy(small)
    m = changed[0].data["measured"]
    key = next(k for k in ("step_time_s", "tokens_per_s_per_gpu", "tflops_per_gpu", "mfu")
               if k in m)
    m[key] = m[key] * (2 if key == "step_time_s" else 0.5)
    again = leave_one_source_out(changed, "training")
    assert again is not first
    before = {r.case: r.error for _, r in first.rows if r.metric == "training step time"}
    after = {r.case: r.error for _, r in again.rows if r.metric == "training step time"}
    assert after[changed[0].id] != pytest.approx(before[changed[0].id])

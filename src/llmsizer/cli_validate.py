"""`llmsizer validate` and `llmsizer calibrate`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from typing import Any

from llmsizer.errors import SpecError


def add_parsers(sub: Any, positive_int: Any) -> None:
    from llmsizer.cli import arg_float

    v = sub.add_parser(
        "validate", help="predict published measurements and print the errors",
        description="Run every validation case (cited training and serving measurements), print "
        "measured vs predicted with the relative error, a summary per metric for the "
        "fitting and held-out splits, and the leave-one-source-out table: for each source "
        "family, the error of a fit that never saw it.")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.add_argument("--markdown", action="store_true", help="the summary as a Markdown table")
    v.add_argument("--training-cases", help="a training cases file (default: the packaged one)")
    v.add_argument("--inference-cases", help="an inference cases file (default: packaged)")
    v.add_argument("--calibration", help="efficiency calibration file to validate instead")
    v.add_argument("--loso", default="training", choices=("training", "serving", "all", "none"),
                   help="which workloads get the leave-one-source-out table (it refits once per "
                   "source family: about a minute for training, three for serving) (default: "
                   "training)")

    c = sub.add_parser(
        "calibrate", help="write an efficiency calibration file from your measurements",
        description="From a GEMM or bandwidth benchmark, or a measured MFU/tokens-per-second of a "
        "training configuration, write a calibration file that train/infer/plan accept with "
        "--calibration FILE. With --from-validation, fit the packaged validation cases.")
    positive = arg_float(0, 1e9, low_open=True, what="a positive number")
    c.add_argument("--gpu", help="the accelerator the measurements come from")
    c.add_argument("--gemm-tflops", type=positive,
                   help="measured large-GEMM TFLOP/s (bf16, or fp16 where there is no bf16)")
    c.add_argument("--bandwidth-gbs", type=positive, help="measured memory copy bandwidth, GB/s")
    c.add_argument("--busbw-gbs", type=positive, help="measured all-reduce bus bandwidth, GB/s")
    c.add_argument("--train", help='a training configuration, as `llmsizer train` arguments: '
                   '"llama-2-7b --gpus 8 --zero 1 --global-batch 64"')
    c.add_argument("--measured-mfu", type=arg_float(0, 1, low_open=True, what="a fraction"),
                   help="MFU measured for --train")
    c.add_argument("--measured-tokens-per-s", type=positive,
                   help="tokens/s (whole run) measured for --train")
    c.add_argument("--from-validation", action="store_true",
                   help="fit the efficiency model on the fitting split of the validation cases")
    c.add_argument("--write", action="store_true",
                   help="with --from-validation: update the packaged efficiency.json")
    c.add_argument("-o", "--output-file", help="write the calibration here (default: stdout)")


def run_validate(args: argparse.Namespace) -> Any:
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.report import dumps
    from llmsizer.validation.cases import load_cases
    from llmsizer.validation.runner import run

    cases = load_cases("training", args.training_cases) + load_cases("inference",
                                                                     args.inference_cases)
    Efficiency.for_accelerator(None, args.calibration)  # a bad file fails here, once

    def eff_for(acc: Any, workload: str) -> Efficiency:
        return Efficiency.for_accelerator(acc, args.calibration, workload=workload)
    report = run(eff_for, cases)
    summary = report.summary()
    loso = None if args.loso == "none" else loso_summaries(
        cases, ("training", "serving") if args.loso == "all" else (args.loso,))
    if args.json:
        return dumps({"rows": [r.__dict__ | {"error": r.error} for r in report.rows],
                      "skipped": [{"case": c, "why": w} for c, w in report.skipped],
                      "summary": summary} | ({"loso": loso} if loso is not None else {}))
    if args.markdown:
        from llmsizer.cli import Outcome

        # Markdown is read by programs and pasted into pages: never folded to the terminal
        return Outcome(summary_markdown(summary, report) + (
            "\n\n" + loso_markdown(loso) if loso is not None else ""), wrap=False)
    from llmsizer.report import table

    rows = [(r.case[:58], r.split, r.metric.replace("inference ", "inf. ").replace(
        "training ", "train "), f"{r.measured:.4g}",
        "-" if r.predicted is None else f"{r.predicted:.4g}",
        "-" if r.error is None else f"{100 * r.error:+.1f}%")
        for r in sorted(report.rows, key=lambda r: (r.metric, r.case))]
    lines = [table(rows, ["case", "split", "metric", "measured", "predicted", "error"],
                   "lllrrr"), "", summary_markdown(summary, report)]
    if loso is not None:
        lines += ["", loso_markdown(loso)]
    if report.skipped:
        lines += ["", f"skipped {len(report.skipped)} cases:"]
        lines += [f"  {c}: {w}" for c, w in report.skipped]
    lines.append("\nsources: `llmsizer validate --json` (each row carries its citation)")
    return "\n".join(lines)


LOSO_METRICS = {"training": ("training step time", "training peak memory"),
                "serving": ("inference throughput", "inference TTFT", "inference TPOT")}


def loso_summaries(cases: list[Any], workloads: tuple[str, ...] = ("training",)
                   ) -> list[dict[str, Any]]:
    """Leave-one-source-out summaries per metric (progress on a terminal's stderr)."""
    from llmsizer.validation.calibrate import leave_one_source_out

    def progress(msg: str) -> None:
        if sys.stderr.isatty():
            print(f"\r{msg[:78]:78s}", end="", file=sys.stderr, flush=True)

    out = []
    for workload in workloads:
        metrics = LOSO_METRICS[workload]
        loso = leave_one_source_out(cases, workload, progress=progress)
        out += [s for m in metrics if (s := loso.summary(m))["families"]]
    if sys.stderr.isatty():
        print("\r" + " " * 78 + "\r", end="", file=sys.stderr, flush=True)
    return out


def loso_markdown(loso: list[dict[str, Any]]) -> str:
    """The leave-one-source-out tables: the summary per metric, then every family."""
    def pct(v: float) -> str:
        return f"{100 * v:.1f} %"

    lines = ["Leave-one-source-out (each family predicted by a fit that never saw it):", "",
             "| metric | families | cases | median of family medians | p90 of cases | "
             "worst family (median) |", "|---|---:|---:|---:|---:|---|"]
    for s in loso:
        lines.append(f"| {s['metric']} | {s['families']} | {s['cases']} | "
                     f"{pct(s['median_of_family_medians'])} | {pct(s['p90_all_cases'])} | "
                     f"{s['worst_family']} ({pct(s['worst_family_median'])}) |")
    lines += ["", "| metric | source family | cases | median abs error | max abs error |",
              "|---|---|---:|---:|---:|"]
    for s in loso:
        for fam, f in s["per_family"].items():
            lines.append(f"| {s['metric']} | {fam} | {f['cases']} | "
                         f"{pct(f['median_abs_error'])} | {pct(f['max_abs_error'])} |")
    return "\n".join(lines)


def summary_markdown(summary: list[dict[str, Any]], report: Any) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f} %"

    lines = ["| metric | split | cases | mean abs error | median abs error | max abs error |",
             "|---|---|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['metric']} | {s['split']} | {s['n']} | {pct(s['mean_abs_error'])} | "
                     f"{pct(s['median_abs_error'])} | {pct(s['max_abs_error'])} |")
    return "\n".join(lines)


def run_calibrate(args: argparse.Namespace) -> str:
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.catalog import get_accelerator
    from llmsizer.validation.calibrate import fit

    if args.from_validation:
        def progress(msg: str) -> None:
            print(msg, file=sys.stderr)

        table, summary = fit(progress=progress)
        text = json.dumps(table, indent=2)
        if args.write:
            from importlib import resources
            from pathlib import Path

            path = Path(str(resources.files("llmsizer.catalog").joinpath("data",
                                                                         "efficiency.json")))
            path.write_text(text + "\n", encoding="utf-8")
            return f"wrote {path} ({summary})"
        return _emit(text, args.output_file)

    if not args.gpu:
        raise SpecError("gpu", None, "the accelerator your measurements come from (--gpu)")
    acc = get_accelerator(args.gpu)
    # Hardware measurements (GEMM, memory copy, all-reduce) hold for both workloads; each
    # workload keeps its own calibrated factors for the rest, so a serving run never inherits
    # training's. A measured training run moves training's factors only.
    measured: dict[str, float] = {}
    notes = []
    if args.gemm_tflops is not None:
        dtype = "bf16" if "bf16" in acc.peak_flops else "fp16"
        ceiling = args.gemm_tflops * 1e12 / acc.peak(dtype)
        if not 0 < ceiling <= 1:
            raise SpecError("gemm-tflops", args.gemm_tflops,
                            f"between 0 and the {dtype} peak ({acc.peak(dtype) / 1e12:g} TFLOP/s)")
        measured["matmul_ceiling"] = ceiling
        notes.append(f"GEMM {args.gemm_tflops:g} TFLOP/s")
    if args.bandwidth_gbs is not None:
        frac = args.bandwidth_gbs * 1e9 / acc.memory_bandwidth_bytes_s
        if not 0 < frac <= 1:
            raise SpecError("bandwidth-gbs", args.bandwidth_gbs,
                            f"between 0 and {acc.memory_bandwidth_bytes_s / 1e9:g} GB/s")
        measured["memory_ceiling"] = frac
        notes.append(f"memory {args.bandwidth_gbs:g} GB/s")
    if args.busbw_gbs is not None:
        link = (acc.intra_node_link_bytes_s or 0) / 2
        if not link or not 0 < args.busbw_gbs * 1e9 / link <= 1:
            raise SpecError("busbw-gbs", args.busbw_gbs,
                            f"between 0 and the link's one-way {link / 1e9:g} GB/s")
        measured["comm_efficiency"] = args.busbw_gbs * 1e9 / link
        notes.append(f"all-reduce bus bandwidth {args.busbw_gbs:g} GB/s")
    training = replace(Efficiency.for_accelerator(acc, workload="training"),
                       **measured)  # type: ignore[arg-type]  # fractions only
    fitted = None
    if args.train:
        fitted, note = _fit_training(args, acc, training)
        notes.append(note)
    if not notes:
        raise SpecError("calibrate", "nothing", "at least one measurement: --gemm-tflops, "
                        "--bandwidth-gbs, --busbw-gbs or --train with --measured-mfu/"
                        "--measured-tokens-per-s (or --from-validation)")
    # Hardware measurements apply to every workload; the factors they leave out keep each
    # workload's packaged calibration (serving never inherits training's). A fitted training
    # run moves training's matrix ceiling only.
    out: dict[str, Any] = {"gpu": acc.name, "source": "llmsizer calibrate from " + "; ".join(notes)}
    out |= {k: float(v) for k, v in measured.items()}
    if fitted is not None:
        out["training"] = {"default": {"matmul_ceiling": float(fitted.matmul_ceiling)}}
    return _emit(json.dumps(out, indent=2), args.output_file)


def _fit_training(args: argparse.Namespace, acc: Any, eff: Any) -> tuple[Any, str]:
    from llmsizer import cli_train
    from llmsizer.analysis.training import train_step
    from llmsizer.cli import build_parser

    if (args.measured_mfu is None) == (args.measured_tokens_per_s is None):
        raise SpecError("train", args.train, "given with one of --measured-mfu or "
                        "--measured-tokens-per-s")
    try:
        words = shlex.split(args.train)
        targs = build_parser().parse_args(["train", *words, "--gpu", acc.name])
    except ValueError as e:
        raise SpecError("train", args.train, f"train arguments in shell syntax ({e})") from None
    except SystemExit:
        raise SpecError("train", args.train, "arguments `llmsizer train` accepts (the line "
                        "above says which is not)") from None
    spec, _, par, precision, opt, _, cluster, overhead, _ = cli_train.build(targs)

    def predicted_mfu(ceiling: float) -> float:
        e = replace(eff, matmul_ceiling=ceiling)
        r = train_step(spec, par, precision, opt, targs.seq, cluster, e,
                       activations=targs.activations, attention_backward=targs.attention,
                       framework_overhead=overhead)
        return r.mfu

    if args.measured_mfu is not None:
        target = args.measured_mfu
        what = f"MFU {target:g}"
    else:
        r = train_step(spec, par, precision, opt, targs.seq, cluster, eff)
        target = args.measured_tokens_per_s * r.step_flops.model_flops / r.tokens_per_step / (
            par.world_size * r.peak_flops)
        what = f"{args.measured_tokens_per_s:g} tokens/s"
    lo, hi = 0.01, 1.0
    if not predicted_mfu(lo) <= target <= predicted_mfu(hi):
        raise SpecError("measured", target, "an MFU this configuration can reach "
                        f"({predicted_mfu(lo):.3f}-{predicted_mfu(hi):.3f} with a matrix "
                        "efficiency between 1 % and 100 %)")
    for _ in range(40):
        mid = (lo + hi) / 2
        if predicted_mfu(mid) < target:
            lo = mid
        else:
            hi = mid
    return replace(eff, matmul_ceiling=(lo + hi) / 2), f"{what} for `train {args.train}`"


def _emit(text: str, path: str | None) -> str:
    if path:
        from llmsizer.cli_plan import write_text

        write_text(path, text)
        return f"wrote {path}"
    return text

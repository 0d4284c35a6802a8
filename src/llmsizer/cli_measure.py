"""`llmsizer measure kernels|train|infer`: real PyTorch runs on this machine's device, beside
llmsizer's prediction for the same run. torch is imported only when one of these runs."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from llmsizer.measure import MeasureError

DEFAULT_MODEL = "gpt2"


def _common(p: argparse.ArgumentParser) -> None:
    from llmsizer.cli import arg_int, arg_length

    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where to run (default: cuda when torch sees one, else cpu)")
    p.add_argument("--nproc", type=arg_int(1, 1024), default=1,
                   help="processes (one per GPU; on a CPU each gets cores/N threads)")
    p.add_argument("--micro-batch", type=arg_int(1, 2**16), default=1,
                   help="sequences per process per step")
    p.add_argument("--seq", type=arg_length(1, 2**20), default=512, help="tokens per sequence")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress lines on the terminal")


def add_parser(sub: Any, positive_int: Any) -> None:
    from llmsizer.cli import MODEL_HELP, arg_int, arg_length

    p = sub.add_parser(
        "measure", help="run real kernels and steps with PyTorch; compare and calibrate",
        description="Measure on this machine with PyTorch (the `measure` extra): `kernels` "
        "writes a calibration file (and on a CPU a device file), `train` and `infer` run real "
        "steps of the model built from its config and print them beside the prediction.")
    inner = p.add_subparsers(dest="measure_command", metavar="WHAT", parser_class=type(p))
    inner.required = True
    k = inner.add_parser("kernels", help="GEMMs, attention, memory stream, collectives",
                         formatter_class=p.formatter_class)
    k.add_argument("--model", default=DEFAULT_MODEL, help="whose shapes to time: " + MODEL_HELP)
    k.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default=None,
                   help="of the timed products (default: fp32 on cpu, bf16 on cuda)")
    k.add_argument("-o", "--output-file", metavar="FILE", help="write the calibration here")
    k.add_argument("--gpu-out", metavar="FILE",
                   help="write the measured device file here (cpu; default: next to -o)")
    k.add_argument("--gpu", help="on cuda: the datasheet entry the fractions are of (default: "
                   "the catalog entry named like torch.cuda.get_device_name())")
    _common(k)
    for name, what in (("train", "real training steps (DDP or FSDP2) vs the prediction"),
                       ("infer", "real prefill and decode (TTFT, TPOT) vs the prediction")):
        q = inner.add_parser(name, help=what, formatter_class=p.formatter_class)
        q.add_argument("model", help=MODEL_HELP)
        q.add_argument("--gpu", help="accelerator name/alias or JSON file (on a cpu: the device "
                       "file `measure kernels` wrote)")
        q.add_argument("--calibration", metavar="FILE", help="a calibration file (measure kernels "
                       "-o)")
        q.add_argument("--steps", type=arg_int(1, 1000), default=5,
                       help="timed repetitions (median reported)")
        q.add_argument("--warmup", type=arg_int(1, 100), default=2,
                       help="untimed repetitions first")
        _common(q)
        if name == "train":
            q.add_argument("--strategy", choices=("ddp", "fsdp2"), default="ddp")
        else:
            q.add_argument("--batch", type=arg_int(1, 2**16), default=1, help="sequences")
            q.add_argument("--prompt", type=arg_length(1, 2**20), default=128)
            q.add_argument("--output", type=arg_length(1, 2**16), default=16)


def run(args: argparse.Namespace) -> str:
    from llmsizer.measure import require_torch

    torch = require_torch()
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    from llmsizer.measure.runtime import check_device

    check_device(args.device, args.nproc)
    if args.measure_command == "kernels":
        return _kernels(args)
    return _run_compare(args)


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------

def _catalog_gpu(args: argparse.Namespace) -> Any:
    """The datasheet entry for a CUDA run (--gpu, or the device's own name), None on a CPU."""
    from llmsizer.catalog import get_accelerator

    if args.device == "cpu":
        return get_accelerator(args.gpu) if args.gpu else None
    import torch

    name = args.gpu or torch.cuda.get_device_name(0)
    try:
        return get_accelerator(name)
    except Exception:
        raise MeasureError(f"--gpu={name!r} is not allowed: not in the catalog; pass --gpu with a "
                           "catalog name or a device JSON file (llmsizer gpus lists them)") from None


def _kernels(args: argparse.Namespace) -> str:
    from llmsizer.catalog import get_model
    from llmsizer.measure import calibration, kernels
    from llmsizer.measure.runtime import cpu_name, host_memory_bytes, launch

    get_model(args.model)  # a bad name fails here, in one line, before any process starts
    acc = _catalog_gpu(args)
    targets = _targets(args)
    dtype = args.dtype or ("fp32" if args.device == "cpu" else "bf16")
    payload = {"model": args.model, "micro_batch": args.micro_batch, "seq": args.seq,
               "dtype": dtype}
    results = launch(kernels.worker, args.nproc, args.device, payload, args.quiet or args.json)
    r = dict(results[0])
    r["cpu_share"] = min(x["cpu_share"] for x in results)  # the most crowded rank's share
    what = (f"{args.model} shapes, micro-batch {args.micro_batch} x {args.seq} tokens, {dtype}, "
            f"{args.nproc} process(es) on {args.device}")
    cal = calibration.build(r, device=args.device, dtype=dtype, world=args.nproc, what=what,
                            cpu_name=cpu_name(), host_memory_bytes=host_memory_bytes(), acc=acc)
    written = _write_kernel_files(targets, cal)
    if args.json:
        return json.dumps({"device": cal.factors["gpu"], "device_file": cal.device,
                           "calibration": cal.factors,
                           "peaks": cal.peaks, "measured": r, "written": written}, indent=2)
    return _kernels_text(args, dtype, cal, r, written)


def _targets(args: argparse.Namespace) -> dict[str, tuple[str, str]]:
    """What `measure kernels` will write: {"device"/"calibration": (path, flag)}, checked
    before any process starts (a typo in a folder must not cost a measurement)."""
    out: dict[str, tuple[str, str]] = {}
    device_path, device_flag = args.gpu_out, "--gpu-out"
    if device_path is None and args.output_file and args.device == "cpu":
        device_path, device_flag = os.path.splitext(args.output_file)[0] + "-device.json", \
            "--output-file"
    if device_path and args.device == "cpu":
        out["device"] = (device_path, device_flag)
    if args.output_file:
        out["calibration"] = (args.output_file, "--output-file")
    for path, flag in out.values():
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise MeasureError(f"{flag}={path!r} is not allowed: its folder {folder!r} does not "
                               "exist or is not writable")
    return out


def _write_kernel_files(targets: dict[str, tuple[str, str]], cal: Any) -> dict[str, str]:
    written: dict[str, str] = {}
    data = {"device": cal.device, "calibration": cal.factors}
    for what, (path, flag) in targets.items():
        if data[what] is None:
            continue
        try:
            Path(path).write_text(json.dumps(data[what], indent=2) + "\n", "utf-8")
        except OSError as e:
            raise MeasureError(f"{flag}={path!r} is not allowed: {e.strerror}") from None
        written[what] = path
    return written


def _kernels_text(args: argparse.Namespace, dtype: str, cal: Any, r: dict[str, Any],
                  written: dict[str, str]) -> str:
    p, f = cal.peaks, cal.factors
    name = cal.device["name"] if cal.device else f["gpu"]
    lines = [f"measured on {name} ({args.nproc} process(es), {r['threads']} thread(s) each)",
             f"  peak {dtype} GEMM        {p['peak_flops'] / 1e12:8.3f} TFLOP/s"
             + ("  (best measured)" if cal.device else "  (datasheet)"),
             f"  model's GEMMs          {p['gemm_flops_per_s'] / 1e12:8.3f} TFLOP/s  -> "
             f"matmul_ceiling {f['matmul_ceiling']:.3f}",
             f"  attention (SDPA)       {p['attention_flops_per_s'] / 1e12:8.3f} TFLOP/s  -> "
             f"attention_efficiency {f['attention_efficiency']:.3f}, backward ratio "
             f"{f['attention_backward_ratio']:.2f}",
             f"  memory stream          {p['stream_bytes_s'] / 1e9:8.1f} GB/s",
             f"  element-wise kernels   {p['elementwise_bytes_s'] / 1e9:8.1f} GB/s  -> "
             f"memory_ceiling {f['memory_ceiling']:.3f}",
             f"  kernel launch          {f['kernel_overhead_s'] * 1e6:8.2f} µs"]
    if args.device == "cpu":
        clock = "CPU time (one thread per process)" if r["threads"] == 1 else "wall clock"
        lines.append(f"  (timed by the {clock}; the busiest process got "
                     f"{r['cpu_share']:.0%} of its cores' time)")
    for row in r.get("collectives", []):
        if "error" in row:
            lines.append(f"  {row['op']:<14} {row['bytes']:>10,} B  unsupported: {row['error']}")
        else:
            lines.append(f"  {row['op']:<14} {row['bytes']:>10,} B  {row['seconds'] * 1e6:10.1f} µs"
                         f"  bus {row['bus_bytes_s'] / 1e9:7.2f} GB/s")
    if "comm_efficiency" in f:
        lines.append(f"  -> comm_efficiency {f['comm_efficiency']:.3f}, latency per hop "
                     f"{f['collective_latency_s'] * 1e6:.1f} µs")
    for what, path in written.items():
        lines.append(f"wrote {what}: {path}")
    if not written:
        lines.append("(nothing written: -o FILE writes the calibration)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# train / infer
# ---------------------------------------------------------------------------------------------

def _accelerator(args: argparse.Namespace) -> Any:
    if args.device == "cpu" and not args.gpu:
        raise MeasureError("--gpu is required with --device cpu: the device file `llmsizer "
                           "measure kernels --device cpu -o calibration.json` writes")
    return _catalog_gpu(args) if args.device == "cuda" or args.gpu else None


def _check_threads(args: argparse.Namespace, acc: Any, nproc: int) -> None:
    """A CPU device file describes cores/N threads per process: a note when this run gives each
    process a different share (its peaks would not apply)."""
    import re

    from llmsizer.cli import NOTES
    from llmsizer.measure.runtime import usable_cores

    m = re.search(r"-(\d+)t$", acc.name) if acc.name.startswith("cpu-measured-") else None
    threads = max(1, usable_cores() // nproc)
    if m and int(m.group(1)) != threads:
        NOTES.append(f"{acc.name} was measured with {m.group(1)} thread(s) per process; this run "
                     f"gives each of its {nproc} process(es) {threads}: measure kernels with "
                     f"--nproc {nproc} for a calibration that applies")


def _run_compare(args: argparse.Namespace) -> str:
    from llmsizer.catalog import get_model
    from llmsizer.measure import model as model_cfg
    from llmsizer.measure import predict
    from llmsizer.measure.runtime import launch

    if args.measure_command == "infer" and args.nproc > 1:
        raise MeasureError(f"--nproc={args.nproc} is not allowed for measure infer: one static "
                           "batch on one device (1)")
    spec = get_model(args.model)
    acc = _accelerator(args)
    config = model_cfg.config_dict(args.model)
    if args.device == "cpu":
        _check_threads(args, acc, args.nproc if args.measure_command == "train" else 1)
    quiet = args.quiet or args.json
    common = {"config": config, "steps": args.steps, "warmup": args.warmup}
    if args.measure_command == "train":
        from llmsizer.measure import require_transformers, train

        require_transformers()  # imported once here; forked CPU workers inherit it
        payload = common | {"strategy": args.strategy, "micro_batch": args.micro_batch,
                            "seq": args.seq}
        # the prediction's input errors (a layout it refuses) before minutes of measuring
        predict.training(spec, acc, args.calibration, device=args.device, nproc=args.nproc,
                         strategy=args.strategy, micro_batch=args.micro_batch, seq=args.seq,
                         framework_overhead=0.0)
        r = launch(train.worker, args.nproc, args.device, payload, quiet)[0]
        # Framework memory: on a CPU the process's resident set before the model exists (torch,
        # transformers, Python); the CUDA allocator's peak holds no context or library memory.
        overhead = float(r["baseline_rss_bytes"]) if args.device == "cpu" else 0.0
        res = predict.training(spec, acc, args.calibration, device=args.device,
                               nproc=args.nproc, strategy=args.strategy,
                               micro_batch=args.micro_batch, seq=args.seq,
                               framework_overhead=overhead)
        measured = {"step_time_s": r["step_time_s"], "peak_memory_bytes": r["peak_memory_bytes"],
                    "step_times_s": r["step_times_s"],
                    "saved_activation_bytes": r["saved_activation_bytes"],
                    "framework_bytes": r["baseline_rss_bytes"], "memory_kind": r["memory_kind"],
                    "params": r["params"], "cpu_share": r["cpu_share"],
                    "step_cpu_time_s": r["step_cpu_time_s"]}
        predicted = {"step_time_s": res.time.total_s,
                     "peak_memory_bytes": int(res.memory.peak.total),
                     "activation_bytes": int(res.memory.peak.activations),
                     "compute_s": res.time.compute_s,
                     "dp_comm_exposed_s": res.time.dp_comm_exposed_s,
                     "optimizer_s": res.time.optimizer_s}
        keys: tuple[str, ...] = ("step_time_s", "peak_memory_bytes")
    else:
        from llmsizer.measure import infer, require_transformers

        require_transformers()
        payload = common | {"batch": args.batch, "prompt": args.prompt, "output": args.output}
        predict.serving(spec, acc, args.calibration, device=args.device, batch=args.batch,
                        prompt=args.prompt, output=args.output)
        r = launch(infer.worker, 1, args.device, payload, quiet)[0]
        overhead = float(r["baseline_rss_bytes"]) if args.device == "cpu" else 0.0
        res = predict.serving(spec, acc, args.calibration, device=args.device, batch=args.batch,
                              prompt=args.prompt, output=args.output, runtime_overhead=overhead)
        measured = {"ttft_s": r["ttft_s"], "tpot_s": r["tpot_s"],
                    "peak_memory_bytes": r["peak_memory_bytes"], "params": r["params"]}
        predicted = {"ttft_s": res.ttft_s, "tpot_s": res.tpot_s,
                     "peak_memory_bytes": int(res.memory.total)}
        keys = ("ttft_s", "tpot_s", "peak_memory_bytes")
    errors = {k: predict.relative_error(predicted[k], measured[k]) for k in keys}
    if measured.get("step_cpu_time_s"):
        # On a CPU shared with other programs the wall clock measures their load too; the CPU
        # time the step used is what it costs on its cores (the kernels were timed that way).
        errors["step_cpu_time_s"] = predict.relative_error(predicted["step_time_s"],
                                                           measured["step_cpu_time_s"])
    if args.json:
        return json.dumps({"model": args.model, "device": args.device, "gpu": acc.name,
                           "nproc": args.nproc, "calibration": args.calibration,
                           "measured": measured, "predicted": predicted,
                           "relative_error": errors}, indent=2)
    return _compare_text(args, acc, measured, predicted, errors, keys)


def predict_error(predicted: float, measured: float) -> str:
    from llmsizer.measure.predict import relative_error

    e = relative_error(predicted, measured)
    return "-" if e is None else f"{e:+.1%}"


def _fmt(key: str, v: float) -> str:
    return f"{v / 2**30:,.3f} GiB" if key.endswith("bytes") else f"{v * 1e3:,.2f} ms"


def _compare_text(args: argparse.Namespace, acc: Any, measured: dict[str, Any],
                  predicted: dict[str, Any], errors: dict[str, float | None],
                  keys: tuple[str, ...]) -> str:
    head = (f"{args.model} on {acc.name}: {args.measure_command}, {args.nproc} process(es)"
            + (f", {args.strategy}" if args.measure_command == "train" else ""))
    lines = [head, f"  {'':<20}{'measured':>14}{'predicted':>14}{'error':>9}"]
    for k in keys:
        e = errors.get(k)
        err = f"{e:+.1%}" if e is not None else "-"
        lines.append(f"  {k:<20}{_fmt(k, measured[k]):>14}{_fmt(k, predicted[k]):>14}{err:>9}")
    if errors.get("step_cpu_time_s") is not None:
        e = errors["step_cpu_time_s"]
        lines.append(f"  {'step CPU time':<20}{_fmt('s', measured['step_cpu_time_s']):>14}"
                     f"{_fmt('s', predicted['step_time_s']):>14}{e:>+9.1%}")
        lines.append(f"  (the processes got {measured['cpu_share']:.0%} of their cores' time; "
                     "below ~80 % other programs' load is in the wall clock)")
    if "saved_activation_bytes" in measured:
        saved, act = measured["saved_activation_bytes"], predicted["activation_bytes"]
        lines.append(f"  {'saved for backward':<20}{_fmt('bytes', saved):>14}"
                     f"{_fmt('bytes', act):>14}{predict_error(act, saved):>9}")
    lines.append(f"  (calibration: {args.calibration or 'packaged defaults'}; memory measured as "
                 f"{measured.get('memory_kind', 'peak')})")
    return "\n".join(lines)

"""`llmsizer finetune`: full, LoRA, DoRA or QLoRA fine-tuning on one GPU or many."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from llmsizer.errors import SpecError
from llmsizer.report import columns
from llmsizer.units import format_bytes, format_count, format_seconds


def add_parser(sub: Any, positive_int: Any) -> None:
    from llmsizer.cli import (
        MAX_GPUS,
        MAX_LENGTH,
        MAX_MICRO_BATCH,
        add_model_and_gpu,
        arg_count,
        arg_float,
        arg_int,
        arg_length,
    )

    f = sub.add_parser(
        "finetune", help="fine-tuning memory and time: full, LoRA, DoRA, QLoRA",
        description="Can this model be fine-tuned on this GPU? Trainable parameters (exact, as "
        "PEFT builds the adapters), memory per device (frozen base in bf16/int8/NF4/FP4 as "
        "bitsandbytes stores it, adapters, gradients and optimizer for the trainable "
        "parameters, activations with the adapters' saved tensors), step time with the "
        "dequantize cost, time-to-train; when it does not fit, what to change, in the order "
        "practitioners try it. Exits 3 when it does not fit.")
    add_model_and_gpu(f)
    f.add_argument("--gpus", type=arg_int(1, MAX_GPUS), default=1,
                   help="number of GPUs (data parallel)")
    f.add_argument("--gpus-per-node", type=arg_int(1, 1024), default=8, help="GPUs per node")
    f.add_argument("--method", default="lora", help="full, lora, qlora or dora")
    f.add_argument("--lora-rank", type=arg_int(1, 65536), default=16, help="adapter rank r")
    f.add_argument("--lora-alpha", type=arg_float(0, 1e6, low_open=True, what="alpha"),
                   default=32.0, help="adapter scaling numerator (scale = alpha / r)")
    f.add_argument("--lora-targets", default="all-linear",
                   help="all-linear or module names as PEFT matches them, e.g. q_proj,v_proj")
    f.add_argument("--base-weights", help="frozen base storage: bf16, fp16, int8, nf4, fp4 "
                   "(default: nf4 for qlora, bf16 otherwise)")
    f.add_argument("--no-double-quant", action="store_true",
                   help="4-bit without double quantization of the absmax scales")
    f.add_argument("--seq", type=arg_length(1, MAX_LENGTH), default=2048,
                   help="sequence length in tokens (4k = 4096)")
    f.add_argument("--allow-long-context", action="store_true",
                   help="size a --seq beyond the model's position limit anyway")
    f.add_argument("--micro-batch", type=arg_int(1, MAX_MICRO_BATCH), default=1,
                   help="sequences per micro-batch per GPU")
    f.add_argument("--global-batch", type=arg_int(1, 2**24),
                   help="sequences per optimizer step (default: micro-batch · GPUs)")
    f.add_argument("--recompute", default="none",
                   help="none, selective or full (gradient checkpointing)")
    f.add_argument("--optimizer", default="adamw", help="adamw, adamw-8bit, paged-adamw, "
                   "paged-adamw-8bit, sgd, sgd-momentum")
    f.add_argument("--precision", default="mixed",
                   help="mixed (bf16 + fp32 master), mixed-fp16, bf16, fp32")
    f.add_argument("--zero", default="0", help="ZeRO stage 0-3 (accepted on one GPU)")
    f.add_argument("--offload", default="", help="optimizer, params or optimizer,params "
                   "(ZeRO-Offload; params needs --zero 3)")
    f.add_argument("--offload-device", default="cpu", help="cpu or nvme")
    f.add_argument("--activations", help="hf-sdpa, hf-eager or megatron (default: hf-sdpa for "
                   "Llama-style models, megatron otherwise)")
    f.add_argument("--tokens", type=arg_count(), help="training tokens, for time-to-train")
    f.add_argument("--overhead", help="framework overhead per device (default: 1GiB)")
    f.add_argument("--calibration", help="efficiency calibration file (llmsizer calibrate)")
    f.add_argument("--export", help="peft (LoraConfig + BitsAndBytesConfig JSON), deepspeed "
                   "or accelerate (FSDP)")
    f.add_argument("-o", "--output-file", help="with --export: write the export here")
    f.add_argument("--json", action="store_true", help="print one JSON object")


def model_type_of(name: str) -> str:
    """The Hugging Face model_type of a catalog name or config path (the language model's for
    multimodal wrappers)."""
    from llmsizer.catalog import model_entry

    entry = model_entry(name)
    if entry is not None:
        config = entry.config
    else:
        from llmsizer.specs.hf import load_config

        config, _ = load_config(name)
    text = config.get("text_config")
    if isinstance(text, dict) and text.get("model_type"):
        return str(text["model_type"])
    return str(config.get("model_type", "llama"))


def build(args: argparse.Namespace) -> dict[str, Any]:
    from llmsizer.analysis.cluster import Cluster
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.analysis.finetune import FineTune
    from llmsizer.analysis.finetune_targets import parse_targets
    from llmsizer.catalog import get_model
    from llmsizer.cli import accelerator_arg
    from llmsizer.cli_train import _zero, check_positions
    from llmsizer.specs.parallel import Parallelism
    from llmsizer.specs.precision import optimizer, training_precision
    from llmsizer.units import parse_bytes

    spec = get_model(args.model)
    acc = accelerator_arg(args)
    check_positions(spec, args.model, args.seq, "seq", args.allow_long_context)
    ft = FineTune.of(args.method.lower(), rank=args.lora_rank, alpha=args.lora_alpha,
                     targets=parse_targets(args.lora_targets), base=args.base_weights,
                     double_quant=not args.no_double_quant, model_type=model_type_of(args.model))
    per_step = args.micro_batch * args.gpus
    gb = args.global_batch or per_step
    if gb % per_step:
        raise SpecError("global-batch", gb, f"a multiple of micro-batch·gpus = {per_step}")
    offload = frozenset(x.strip() for x in args.offload.split(",") if x.strip())
    if args.recompute not in ("none", "selective", "full"):
        raise SpecError("recompute", args.recompute, "none, selective or full")
    par = Parallelism(dp=args.gpus, zero=_zero(args.zero), offload=offload,
                      offload_device=args.offload_device, recompute=args.recompute,
                      micro_batch=args.micro_batch, grad_accum=gb // per_step)
    precision = training_precision(args.precision)
    if precision.compute_dtype not in acc.peak_flops:
        raise SpecError("precision", args.precision, f"a recipe {acc.display_name} has a peak "
                        "for: " + ", ".join(acc.peak_flops))
    overhead = parse_bytes(args.overhead, "overhead") if args.overhead else None
    if overhead is not None and not 0 <= overhead <= 2**50:
        raise SpecError("overhead", args.overhead, "a size from 0 to 1PiB")
    if args.activations and args.activations not in ("hf-sdpa", "hf-eager", "megatron"):
        raise SpecError("activations", args.activations, "hf-sdpa, hf-eager or megatron")
    return {"spec": spec, "acc": acc, "ft": ft, "par": par, "precision": precision,
            "opt": optimizer(args.optimizer), "seq": args.seq,
            "cluster": Cluster(acc, gpus_per_node=args.gpus_per_node),
            "eff": Efficiency.for_accelerator(acc, args.calibration),
            "activations": args.activations, "overhead": overhead}


def evaluate(k: dict[str, Any]) -> Any:
    from llmsizer.analysis.finetune import finetune

    return finetune(k["spec"], k["ft"], k["par"], k["precision"], k["opt"], k["seq"],
                    k["cluster"], k["eff"], activations=k["activations"],
                    framework_overhead=k["overhead"])


def suggestions(k: dict[str, Any]) -> list[dict[str, Any]]:
    """What practitioners try, in order, each on top of the previous memory savers: a smaller
    micro-batch, gradient checkpointing, an 8-bit paged optimizer; then LoRA, QLoRA; then
    ZeRO-Offload of the optimizer (and parameters) to CPU or NVMe on the same GPUs; then more
    GPUs with ZeRO-3. Each with its memory per device, fit and step time."""
    from llmsizer.analysis.finetune import FineTune

    out: list[dict[str, Any]] = []
    cur = dict(k)

    def attempt(label: str, change: dict[str, Any], keep: bool) -> None:
        nonlocal cur
        trial = dict(cur)
        trial.update(change)
        try:
            r = evaluate(trial)
        except SpecError:
            return
        out.append({"change": label, "memory_per_device": r.memory["total"], "fits": r.fits,
                    "step_time_s": r.step_time_s, "trainable_params": r.trainable_params,
                    "host_bytes_per_device": r.host_bytes})
        if keep:
            cur = trial

    par, ft = k["par"], k["ft"]
    if par.micro_batch > 1:
        attempt("--micro-batch 1", {"par": replace(par, micro_batch=1,
                                                   grad_accum=par.grad_accum * par.micro_batch)},
                True)
    if cur["par"].recompute != "full":
        attempt("--recompute full", {"par": replace(cur["par"], recompute="full")}, True)
    if cur["opt"].moments and "8bit" not in cur["opt"].name:
        from llmsizer.specs.precision import optimizer

        attempt("--optimizer paged-adamw-8bit", {"opt": optimizer("paged-adamw-8bit")}, True)
    if ft.method == "full":
        attempt("--method lora", {"ft": FineTune.of("lora", model_type=ft.model_type),
                                  "par": replace(cur["par"], zero=0, offload=frozenset())},
                False)
    if ft.method in ("full", "lora", "dora"):
        attempt("--method qlora", {"ft": FineTune.of("qlora", model_type=ft.model_type,
                                                     rank=ft.rank, targets=ft.targets),
                                   "par": replace(cur["par"], zero=0, offload=frozenset())},
                False)
    p = cur["par"]
    if "optimizer" not in p.offload:
        attempt("--zero 2 --offload optimizer", {"par": replace(p, zero=max(p.zero, 2),
                                                                offload=frozenset({"optimizer"}))},
                False)
    attempt("--zero 3 --offload optimizer,params",
            {"par": replace(p, zero=3, offload=frozenset({"optimizer", "params"}))}, False)
    attempt("--zero 3 --offload optimizer,params --offload-device nvme",
            {"par": replace(p, zero=3, offload=frozenset({"optimizer", "params"}),
                            offload_device="nvme")}, False)
    for n in (2, 4, 8):
        gpus = p.dp * n
        attempt(f"--gpus {gpus} --zero 3", {"par": replace(p, dp=gpus, zero=3, offload=frozenset(),
                                                           grad_accum=max(1, p.grad_accum // n))},
                False)
    return out


def result_json(r: Any, k: dict[str, Any], tokens: float | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": r.spec.name, "gpu": k["acc"].name, "gpu_name": k["acc"].display_name,
        "method": r.ft.method, "gpus": r.par.dp, "seq": r.seq,
        "micro_batch": r.par.micro_batch, "grad_accum": r.par.grad_accum,
        "global_batch": r.par.global_batch, "recompute": r.par.recompute, "zero": r.par.zero,
        "offload": sorted(r.par.offload), "optimizer": k["opt"].name,
        "trainable_params": r.trainable_params, "total_params": r.total_params,
        "trainable_fraction": r.trainable_params / r.total_params,
        "memory_per_device": dict(r.memory) | {"other_parts": r.memory_parts},
        "host_bytes_per_device": r.host_bytes, "nvme_bytes_per_device": r.nvme_bytes,
        "capacity_bytes": r.capacity_bytes, "fits": r.fits, "shortfall_bytes": r.shortfall_bytes,
        "step_time_s": r.step_time_s, "step_time_breakdown_s": r.step_parts_s,
        "tokens_per_step": r.tokens_per_step,
        "tokens_per_s": r.tokens_per_step / r.step_time_s,
        "time_to_train_s": r.time_to_train_s(tokens) if tokens else None,
        "assumptions": r.assumptions,
    }
    if r.ft.method != "full":
        data["lora"] = {"rank": r.ft.rank, "alpha": r.ft.alpha, "targets": list(r.ft.targets),
                        "base_weights": r.ft.base.name,
                        "double_quant": r.ft.base.double_quant,
                        "modules": [{"module": a.module.leaf, "block": a.module.block,
                                     "layers": a.module.layers, "rank": a.rank,
                                     "params": a.params} for a in r.adapters]}
    return data


def format_gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def text(d: dict[str, Any]) -> str:
    m = d["memory_per_device"]
    lines = [f"{d['model']}: {d['method']} fine-tuning on {d['gpus']}× {d['gpu_name']}, seq "
             f"{d['seq']}, micro-batch {d['micro_batch']} × {d['grad_accum']}, recompute "
             f"{d['recompute']}, {d['optimizer']}"
             + (f", ZeRO-{d['zero']}" if d["zero"] else "")
             + (f", offload {'+'.join(d['offload'])}" if d["offload"] else "")]
    # label/value blocks laid out by report.columns: padded in terminal cells, so they line up
    # in Chinese (--lang zh) too
    head = [("trainable parameters", f"{d['trainable_params']:,} "
             f"({format_count(d['trainable_params'])}, {100 * d['trainable_fraction']:.3g}% of "
             f"{format_count(d['total_params'])})")]
    if "lora" in d:
        lo = d["lora"]
        head.append(("adapters", f"r={lo['rank']} alpha={lo['alpha']:g} on "
                     + ", ".join(sorted({x['module'] for x in lo['modules']}))
                     + f"; base {lo['base_weights']}"
                     + (" + double quant" if lo["double_quant"] and lo["base_weights"] in
                        ("nf4", "fp4") else "")))
    lines += columns(head, "ll", indent="", gap="  ")
    lines.append("memory per device")
    memory = [(key, format_bytes(m[key])) for key in
              ("weights", "gradients", "optimizer", "activations", "other", "total")]
    if d["host_bytes_per_device"]:
        memory.append(("host memory", format_bytes(d["host_bytes_per_device"]), "(offloaded)"))
    lines += columns(memory, "lrl", gap="  ")
    verdict = "fits" if d["fits"] else f"DOES NOT FIT ({format_bytes(d['shortfall_bytes'])} over)"
    lines.append(f"capacity {format_bytes(d['capacity_bytes'])}: {verdict}")
    b = d["step_time_breakdown_s"]
    lines.append(f"step time {format_seconds(d['step_time_s'])} ("
                 + ", ".join(f"{k} {format_seconds(v)}" for k, v in b.items() if v) + f"), "
                 f"{d['tokens_per_s']:,.0f} tokens/s")
    if d.get("time_to_train_s"):
        lines.append(f"time to train {format_seconds(d['time_to_train_s'])}")
    if d.get("suggestions"):
        lines.append("what to change (in order, each on top of the memory savers above it):")
        lines += columns([(s["change"], format_gib(s["memory_per_device"]),
                           "fits" if s["fits"] else "no", f"{format_seconds(s['step_time_s'])}/step")
                          for s in d["suggestions"]], "lrrr")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> Any:
    from llmsizer.cli import EXIT_DOES_NOT_FIT, Outcome
    from llmsizer.cli_plan import check_export_flags, emit_export
    from llmsizer.report import dumps

    check_export_flags(args)
    k = build(args)
    r = evaluate(k)
    data = result_json(r, k, args.tokens)
    if not r.fits:
        data["suggestions"] = suggestions(k)
    status = 0 if r.fits else EXIT_DOES_NOT_FIT
    if args.export:
        from llmsizer.export.finetune import finetune_export

        exported = finetune_export(args.export, r, k["precision"], k["opt"], args.model)
        out = emit_export(args, args.export, exported, data)
        return Outcome(out.text, status, wrap=False) if isinstance(out, Outcome) else out
    if args.json:
        return Outcome(dumps(data), status, wrap=False)
    return Outcome(text(data), status)

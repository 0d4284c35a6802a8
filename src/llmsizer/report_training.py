"""Text, JSON and --explain views of a training analysis."""

from __future__ import annotations

from typing import Any

from llmsizer.analysis.params import count_params
from llmsizer.analysis.training import TrainingResult
from llmsizer.formulas import flops_6NT, flops_8NT, flops_megatron, flops_palm, flops_seed001
from llmsizer.report import columns, table
from llmsizer.units import format_bytes, format_count, format_flops, format_seconds


def achieved(result: TrainingResult, *, gpu_hours: float | None = None,
             step_time_s: float | None = None, tokens_per_s: float | None = None,
             tokens: float | None = None) -> dict[str, Any] | None:
    """The inverse question: from a measurement, the MFU/HFU that was achieved."""
    par, peak = result.par, result.peak_flops
    per_token_model = result.step_flops.model_flops / result.tokens_per_step
    per_token_hw = result.step_flops.hardware_flops / result.tokens_per_step
    n = count_params(result.spec).active
    if gpu_hours is not None:
        if tokens is None:
            return None
        gpu_seconds = gpu_hours * 3600
        rate = tokens / gpu_seconds  # tokens per GPU-second
        given = f"{gpu_hours:g} GPU-hours for {tokens:g} tokens"
    elif step_time_s is not None:
        rate = result.tokens_per_step / (step_time_s * par.world_size)
        given = f"step time {step_time_s:g} s on {par.world_size} GPUs"
    elif tokens_per_s is not None:
        rate = tokens_per_s / par.world_size
        given = f"{tokens_per_s:g} tokens/s on {par.world_size} GPUs"
    else:
        return None
    return {
        "given": given,
        "tokens_per_s_per_device": rate,
        "mfu": rate * per_token_model / peak,
        "hfu": rate * per_token_hw / peak,
        "mfu_6N": rate * 6 * n / peak,
        "model_flops_per_token": per_token_model,
        "six_n_per_token": 6 * n,
        "peak_flops": peak,
        "formula": "MFU = tokens/s/device · FLOPs/token / peak",
    }


def check_training(r: TrainingResult) -> None:
    """Physical invariants of a training result; a violation is a bug (ImpossibleResultError)."""
    import math

    from llmsizer.errors import ImpossibleResultError

    def bad(what: str, value: float, allowed: str) -> ImpossibleResultError:
        return ImpossibleResultError(f"{what} = {value:g} for {r.spec.name} (must be {allowed})")

    t = r.time
    if not (math.isfinite(t.total_s) and t.total_s > 0):
        raise bad("step time", t.total_s, "finite and > 0 s")
    for name, v in vars(t).items():
        if not (math.isfinite(v) and v >= 0):
            raise bad(f"step time part {name}", v, "finite and >= 0 s")
    for s in r.memory.stages:
        for name in ("weights", "gradients", "optimizer", "activations", "other", "host_bytes",
                     "nvme_bytes"):
            v = getattr(s, name)
            if not (math.isfinite(v) and v >= 0):
                raise bad(f"stage {s.stage} {name} bytes", v, "finite and >= 0")
    for name, v in (("MFU", r.mfu), ("HFU", r.hfu)):
        if not (math.isfinite(v) and 0 < v <= 1):
            raise bad(name, v, "in (0, 1]: no run does more FLOPs than its peak")


def training_json(r: TrainingResult, tokens: float | None, price: float | None,
                  inverse: dict[str, Any] | None, explain: bool,
                  currency: str = "USD") -> dict[str, Any]:
    peak = r.memory.peak
    t = r.time
    out: dict[str, Any] = {
        "model": r.spec.name,
        "parallelism": {
            "gpus": r.par.world_size, "dp": r.par.dp, "tp": r.par.tp, "pp": r.par.pp,
            "cp": r.par.cp, "ep": r.par.ep, "zero": r.par.zero,
            "sequence_parallel": r.par.sequence_parallel, "recompute": r.par.recompute,
            "offload": sorted(r.par.offload), "micro_batch": r.par.micro_batch,
            "grad_accum": r.par.grad_accum, "global_batch": r.par.global_batch,
            "schedule": r.par.schedule, "virtual_stages": r.par.virtual_stages,
        },
        "seq": r.seq,
        "memory_per_device": {
            "weights": peak.weights, "gradients": peak.gradients, "optimizer": peak.optimizer,
            "activations": peak.activations, "other": peak.other, "total": peak.total,
            "other_parts": peak.other_parts, "stage": peak.stage,
            "in_flight_microbatches": peak.in_flight_microbatches,
        },
        "memory_per_stage": [s.total for s in r.memory.stages],
        "host_bytes_per_device": peak.host_bytes,
        "nvme_bytes_per_device": peak.nvme_bytes,
        "capacity_bytes": r.capacity_bytes,
        "fits": r.fits,
        "shortfall_bytes": r.shortfall_bytes,
        "flops_per_step": r.step_flops.model_flops,
        "hardware_flops_per_step": r.step_flops.hardware_flops,
        "forward_flops_per_step": r.step_flops.forward,
        "step_time_s": t.total_s,
        "step_time_breakdown_s": {
            "compute": t.compute_s, "pipeline_bubble": t.bubble_s, "tp_comm": t.tp_comm_s,
            "ep_comm": t.ep_comm_s, "cp_comm": t.cp_comm_s, "pp_comm": t.pp_comm_s,
            "dp_comm_exposed": t.dp_comm_exposed_s, "optimizer": t.optimizer_s,
            "overlap_contention": t.contention_s,
        },
        # every communication term whole and as it shows: the framework hides the difference
        "communication_s": {name: {"total": total, "exposed": exposed,
                                   "hidden": max(0.0, total - exposed)}
                            for name, (total, exposed) in t.hidden().items()},
        "tokens_per_step": r.tokens_per_step,
        "tokens_per_s": r.tokens_per_s,
        "tokens_per_s_per_device": r.tokens_per_s / r.par.world_size,
        "samples_per_s_per_device": r.par.global_batch / t.total_s / r.par.world_size,
        "tflops_per_s_per_device": r.step_flops.model_flops / t.total_s / r.par.world_size / 1e12,
        "mfu": r.mfu,
        "hfu": r.hfu,
        "mfu_peak": {
            "dtype": r.precision.compute_dtype if r.precision is not None else "bf16",
            "flops_per_s_per_device": r.peak_flops,
            "what": "dense (no sparsity) peak of the precision's matrix dtype; MFU and HFU "
                    "divide by it",
        },
        "assumptions": r.assumptions,
        "references": [
            {"name": ref.name, "value": ref.value, "relative_error":
             ref.relative_error(target), "compared_to": what, "source": ref.source}
            for ref, target, what in _references(r)
        ],
    }
    out["memory_references"] = [
        {"name": ref.name, "formula": ref.formula, "value": ref.value,
         "relative_error": ref.relative_error(target) if target else None, "compared_to": what,
         "source": ref.source}
        for ref, target, what in _memory_references(r)
    ]
    if tokens is not None:
        seconds = tokens / r.tokens_per_s
        out["tokens"] = tokens
        out["time_to_train_s"] = seconds
        out["gpu_hours"] = seconds * r.par.world_size / 3600
        if price is not None:
            out["cost"] = out["gpu_hours"] * price
            out["currency"] = currency
            out["price_per_gpu_hour"] = price
    else:
        out["time_to_train_s"] = None
    if inverse is not None:
        out["achieved"] = inverse
    if explain:
        out["explain"] = explain_lines(r)
    return out


def _references(r: TrainingResult) -> list[tuple[Any, float, str]]:
    n = count_params(r.spec).active
    tokens = r.tokens_per_step
    b = r.par.global_batch
    fwd = r.step_flops.forward
    return [
        (flops_6NT(n, tokens), r.step_flops.model_flops, "model FLOPs"),
        (flops_8NT(n, tokens), 4 * fwd, "4× forward (full recompute)"),
        (flops_palm(r.spec, n, tokens, r.seq), r.step_flops.model_flops, "model FLOPs"),
        (flops_megatron(r.spec, b, r.seq, recompute=r.par.recompute == "full"),
         r.step_flops.hardware_flops, "hardware FLOPs"),
        (flops_seed001(r.spec, b, r.seq), fwd, "forward FLOPs"),
    ]


def _memory_references(r: TrainingResult) -> list[tuple[Any, float, str]]:
    from llmsizer.analysis.activations import korthikanti_per_layer
    from llmsizer.analysis.params import layer_held
    from llmsizer.formulas import (
        bytes_20P,
        deepspeed_estimate,
        korthikanti_activations,
        zero_model_states,
    )

    p, peak = r.par, r.memory.peak
    states = peak.weights + peak.gradients + peak.optimizer
    refs: list[tuple[Any, float, str]] = [
        (zero_model_states(peak.params, p.data_shard_group, p.zero), states,
         "weights + gradients + optimizer"),
    ]
    largest = max(layer_held(r.spec, i, p.tp, p.ep).held for i in range(r.spec.num_layers))
    ds = deepspeed_estimate(peak.params, largest, p.data_shard_group, p.zero,
                            "optimizer" in p.offload, "params" in p.offload)
    if ds is not None:
        refs.append((ds, states, "weights + gradients + optimizer"))
    per_layer = korthikanti_per_layer(r.spec, p.micro_batch, r.seq // p.cp, p.tp,
                                      p.sequence_parallel, p.recompute)
    layers = peak.layers * peak.in_flight_microbatches
    refs.append((korthikanti_activations(round(layers), per_layer, "s·b·h·(34 + 5·a·s/h)"),
                 peak.activations, "activations"))
    refs.append((bytes_20P(count_params(r.spec).total), 0.0, "no sharding, no activations"))
    return refs


def training_text(r: TrainingResult, data: dict[str, Any]) -> str:
    p = r.par
    peak = r.memory.peak
    lines = [
        f"{r.spec.name} on {p.world_size}× {data['gpu_name']}: dp={p.dp} tp={p.tp} pp={p.pp} "
        f"cp={p.cp} ep={p.ep}, ZeRO-{p.zero}"
        + (f", offload {'+'.join(sorted(p.offload))} to {p.offload_device}" if p.offload else "")
        + f", recompute {p.recompute}" + (", sequence parallel" if p.sequence_parallel else "")
        + f", {p.schedule}" + (f":{p.virtual_stages}" if p.virtual_stages > 1 else ""),
        f"seq {r.seq}, micro-batch {p.micro_batch}, {p.grad_accum} micro-batches per step, "
        f"global batch {p.global_batch} sequences = {r.tokens_per_step:,} tokens",
        "",
        f"memory per device (most loaded: pipeline stage {peak.stage}, "
        f"{peak.in_flight_microbatches:g} micro-batches in flight)",
    ]
    rows = [("weights", peak.weights), ("gradients", peak.gradients),
            ("optimizer (+fp32 master)", peak.optimizer), ("activations", peak.activations)]
    rows += [(f"other: {k}", v) for k, v in peak.other_parts.items()]
    rows.append(("total", peak.total))
    lines.append(table([(k, format_bytes(v)) for k, v in rows], ["", "bytes"]))
    if peak.host_bytes or peak.nvme_bytes:
        lines.append(f"offloaded per device: host {format_bytes(peak.host_bytes)}, "
                     f"NVMe {format_bytes(peak.nvme_bytes)}")
    cap = format_bytes(r.capacity_bytes)
    if r.fits:
        lines.append(f"fits: {format_bytes(peak.total)} of {cap}")
    else:
        lines.append(f"DOES NOT FIT: needs {format_bytes(peak.total)} of {cap}, "
                     f"{format_bytes(r.shortfall_bytes)} over")
        for s in data.get("suggestions", []):
            lines.append(f"  would fit: {s}")
    t = r.time
    lines += ["", f"step time {format_seconds(t.total_s)}"]
    parts = [("compute (fwd+bwd+recompute)", t.compute_s), ("pipeline bubble", t.bubble_s),
             ("tensor-parallel comm", t.tp_comm_s), ("expert all-to-all", t.ep_comm_s),
             ("context-parallel comm (exposed)", t.cp_comm_s), ("pipeline p2p", t.pp_comm_s),
             ("data-parallel comm (exposed)", t.dp_comm_exposed_s), ("optimizer step", t.optimizer_s),
             ("compute slowed by hidden comm", t.contention_s)]
    lines.append(table([(k, format_seconds(v), f"{100 * v / t.total_s:.1f}%")
                        for k, v in parts if v > 0], ["", "time", "share"]))
    lines += [
        "",
        f"throughput {r.tokens_per_s:,.0f} tokens/s ({r.tokens_per_s / p.world_size:,.0f} "
        f"tokens/s/device, {data['samples_per_s_per_device']:.3g} samples/s/device)",
        f"model FLOPs/step {format_flops(r.step_flops.model_flops)} "
        f"(hardware {format_flops(r.step_flops.hardware_flops)}); "
        f"{data['tflops_per_s_per_device']:.1f} TFLOP/s/device; MFU {100 * r.mfu:.1f}%, "
        f"HFU {100 * r.hfu:.1f}% of the {r.peak_flops / 1e12:g} TFLOP/s dense "
        f"{data['mfu_peak']['dtype']} peak",
    ]
    if data.get("time_to_train_s") is not None:
        line = (f"time to train {data['tokens']:.3g} tokens: "
                f"{format_seconds(data['time_to_train_s'])}, {data['gpu_hours']:,.0f} GPU-hours")
        if "cost" in data:
            line += f", cost {data['cost']:,.0f} {data['currency']}"
        lines.append(line)
    if "achieved" in data:
        a = data["achieved"]
        lines += ["", f"achieved, from {a['given']}:",
                  f"  {a['tokens_per_s_per_device']:,.0f} tokens/s/device · FLOPs/token / peak",
                  f"  MFU with 6·N per token ({format_count(a['six_n_per_token'])}): "
                  f"{100 * a['mfu_6N']:.1f}%",
                  f"  MFU with attention-inclusive model FLOPs "
                  f"({format_count(a['model_flops_per_token'])}/token): {100 * a['mfu']:.1f}%",
                  f"  HFU (with recomputation): {100 * a['hfu']:.1f}%"]
    # name, value, error, what it is compared to: columns padded in terminal cells (the labels
    # may be Chinese: --lang zh)
    lines += ["", "memory references:"]
    lines += columns([(ref["name"], format_bytes(ref["value"]),
                       *((f"{100 * ref['relative_error']:+.1f}%", f"vs {ref['compared_to']}")
                         if ref["relative_error"] is not None else ("", f"({ref['compared_to']})")))
                      for ref in data["memory_references"]], "lrrl", gap="  ")
    lines += ["", "FLOPs references:"]
    lines += columns([(ref["name"], format_flops(ref["value"]),
                       f"{100 * ref['relative_error']:+.1f}%", f"vs {ref['compared_to']}")
                      for ref in data["references"]], "lrrl", gap="  ")
    lines += ["", "assumptions: " + "; ".join(f"{k}: {v}" for k, v in r.assumptions.items()
                                             if k != "gpu")]
    return "\n".join(lines)


def explain_lines(r: TrainingResult) -> list[str]:
    """Formulas with values substituted for the headline numbers, and where each comes from."""
    from llmsizer.analysis import frameworks
    from llmsizer.analysis.activations import layer_activations, output_activations

    p, peak, t = r.par, r.memory.peak, r.time
    prec, opt = r.precision, r.opt
    psi = peak.params
    lines = [f"Ψ = parameters on the most loaded device (pipeline stage {peak.stage}) = {psi:,} "
             f"(after tp={p.tp}, pp={p.pp}, ep={p.ep}; `llmsizer params --tp --pp --ep`)"]
    if prec is not None and opt is not None:
        k_master, k_opt = prec.master_bytes, opt.state_bytes(prec)
        n_d = p.data_shard_group

        def model_state(name: str, per: float, stage: int, value: float, why: str) -> str:
            sharded = p.zero >= stage and n_d > 1
            div = f"/{n_d}" if sharded else ""
            how = (f"sharded over N_d = dp·cp = {n_d} from ZeRO-{stage}" if sharded
                   else f"whole on each rank below ZeRO-{stage}")
            result = format_bytes(value)
            if value == 0 and p.offload:
                computed = psi * per / (n_d if sharded else 1)
                result = f"{format_bytes(computed)}, offloaded: 0 B on the device"
            return (f"{name} = Ψ·{per:g} bytes{div} = {psi:,}·{per:g}{div} = {result}"
                    f"   [{why}; {how} (Rajbhandari et al. 2020, sec. 5.1)]")

        lines += [
            model_state("weights", prec.weight_bytes, 3, peak.weights,
                        f"{prec.name} weights"),
            model_state("gradients", prec.gradient_bytes, 2, peak.gradients,
                        f"{prec.name} gradients"),
            model_state("optimizer", k_master + k_opt, 1, peak.optimizer,
                        f"K = fp32 master {k_master:g} + {opt.name} state {k_opt:g} bytes"),
        ]
        if p.offload:
            offloaded = format_bytes(peak.host_bytes + peak.nvme_bytes)
            lines.append(f"offloaded to {p.offload_device}: {offloaded} (ZeRO-Offload: optimizer "
                         "states, master weights and the gradient partition; ZeRO-Infinity: the "
                         "weights too)")
    act_b = 4 if prec is not None and prec.compute_dtype == "fp32" else 2
    b, s = p.micro_batch, r.seq // p.cp
    first_layer = sum(st.layers for st in r.memory.stages[:peak.stage])
    saving = frameworks.saving_recompute(r.framework, p.recompute)
    layer = layer_activations(r.spec, b, s, convention=r.activations, act_bytes=act_b, tp=p.tp,
                              sequence_parallel=p.sequence_parallel, recompute=saving,
                              moe_layer=r.spec.is_moe_layer(first_layer), flash=r.flash)
    lines.append(f"activations per layer ({r.activations}, b={b}, s={s}, h={r.spec.hidden_size}, "
                 f"e={act_b}) = {format_bytes(layer.bytes)}:")
    lines += [f"    {sv.name}: {sv.formula} = {format_bytes(sv.bytes)}" for sv in layer.saved]
    out = output_activations(r.spec, b, s, convention=r.activations, act_bytes=act_b, tp=p.tp,
                             sequence_parallel=p.sequence_parallel, recompute=p.recompute,
                             compiled_loss=frameworks.profile(r.framework).compiled_loss)
    lines.append(f"activations = {peak.layers} layers × {format_bytes(layer.bytes)} × "
                 f"{peak.in_flight_microbatches:g} micro-batches in flight ({p.schedule})"
                 + (f" + output head {format_bytes(out.bytes)}" if peak.stage == p.pp - 1 else "")
                 + f" = {format_bytes(peak.activations)}   [Korthikanti et al. 2022 sec. 4; "
                 "Narayanan et al. 2021 sec. 2.2 for in-flight micro-batches]")
    lines.append("other = " + " + ".join(f"{k} {format_bytes(v)}" for k, v in
                                          peak.other_parts.items())
                 + f" = {format_bytes(peak.other)}")
    t_mb = t.compute_s / p.grad_accum
    lines += [
        f"step time = (m + (pp−1)/V)·t_mb + tp/ep/cp comm + pp p2p + exposed dp comm + optimizer"
        f" + contention = ({p.grad_accum} + {p.pp - 1}/{p.virtual_stages})·"
        f"{format_seconds(t_mb)} + {format_seconds(t.tp_comm_s + t.ep_comm_s + t.cp_comm_s)} + "
        f"{format_seconds(t.pp_comm_s)} + {format_seconds(t.dp_comm_exposed_s)} + "
        f"{format_seconds(t.optimizer_s)} + {format_seconds(t.contention_s)} = "
        f"{format_seconds(t.total_s)}   [Narayanan et al. 2021, sec. 2.2 (bubble); NCCL's "
        "ring/hierarchical collectives (nccl-tests PERFORMANCE.md)]",
        f"contention = overlap_slowdown · hidden NCCL collectives (data-parallel, expert "
        f"all-to-all) = {format_seconds(t.contention_s)}: the SMs and memory bandwidth their "
        "kernels hold slow the compute they hide under [Lee et al. 2025, arXiv:2507.03114: "
        "overlapped compute 18.9 % slower on average]",
        "communication, total → exposed (the framework hides the rest): " + "; ".join(
            f"{name} {format_seconds(total)} → {format_seconds(exposed)}"
            for name, (total, exposed) in t.hidden().items() if total > 0)
        + (f"; context-parallel ring {format_seconds(t.cp_comm_s)} exposed beyond the attention "
           "it overlaps" if t.cp_comm_s else ""),
        f"MFU = model FLOPs/step / (step time · GPUs · peak) = {r.step_flops.model_flops:.4g} / "
        f"({t.total_s:.4g} · {p.world_size} · {r.peak_flops:.4g}) = {100 * r.mfu:.2f}%"
        "   [PaLM, Appendix B]",
        f"HFU = hardware FLOPs/step (recomputation included) / (step time · GPUs · peak) = "
        f"{r.step_flops.hardware_flops:.4g} / ({t.total_s:.4g} · {p.world_size} · "
        f"{r.peak_flops:.4g}) = {100 * r.hfu:.2f}%",
        f"tokens/s = global batch · seq / step time = {p.global_batch} · {r.seq} / "
        f"{t.total_s:.4g} = {r.tokens_per_s:,.0f}; per device ÷ {p.world_size} = "
        f"{r.tokens_per_s / p.world_size:,.0f}   [seed 004: tokens/s/p]",
        "time to train = tokens / tokens/s; GPU-hours = time · GPUs / 3600; cost = GPU-hours · "
        "price   [seed 001: 6·T·P/(n·X·u)]",
    ]
    return lines

"""Text, JSON and --explain views of a serving analysis."""

from __future__ import annotations

from typing import Any

from llmsizer.analysis.inference import ServingResult
from llmsizer.analysis.kvcache import kv_heads_per_rank
from llmsizer.analysis.params import count_params
from llmsizer.i18n import pgettext
from llmsizer.report import table
from llmsizer.units import format_bytes, format_flops, format_seconds


def check_serving(r: ServingResult) -> None:
    """Physical invariants of a serving result; a violation is a bug (ImpossibleResultError)."""
    import math

    from llmsizer.errors import ImpossibleResultError

    def bad(what: str, value: float, allowed: str) -> ImpossibleResultError:
        return ImpossibleResultError(f"{what} = {value:g} for {r.spec.name} (must be {allowed})")

    for name in ("ttft_s", "tpot_s", "e2e_latency_s", "throughput_tokens_per_s"):
        v = getattr(r, name)
        if not (math.isfinite(v) and v > 0):
            raise bad(name, v, "finite and > 0")
    m = r.memory
    for name in ("weights", "kv_cache", "workspace", "overhead"):
        v = getattr(m, name)
        if not (math.isfinite(v) and v >= 0):
            raise bad(f"{name} bytes", v, "finite and >= 0")
    dtype = r.cfg.weights.compute_dtype if r.cfg.weights else "bf16"
    peak = r.acc.peak_flops.get(dtype) or max(r.acc.peak_flops.values())
    for label, p in (("prefill", r.prefill), ("decode", r.decode)):
        if not (math.isfinite(p.time_s) and p.time_s > 0):
            raise bad(f"{label} time", p.time_s, "finite and > 0 s")
        util = p.flops / (p.time_s * peak)
        if util > 1 + 1e-9:
            raise bad(f"{label} FLOP utilisation", util, "<= 1: no pass beats the peak")
        bw = p.bytes / (p.time_s * r.acc.memory_bandwidth_bytes_s)
        if bw > 1 + 1e-9:
            raise bad(f"{label} memory-bandwidth utilisation", bw, "<= 1")


def inference_json(r: ServingResult, sweep: list[ServingResult], turn: int | None,
                   explain: bool) -> dict[str, Any]:
    m = r.memory
    out: dict[str, Any] = {
        "model": r.spec.name,
        "gpu": r.acc.name,
        "tp": r.cfg.tp, "pp": r.cfg.pp, "batch": r.batch, "prompt": r.prompt,
        "output": r.output, "max_seq": r.max_seq,
        "weights_bytes_per_device": m.weights,
        "kv_cache_bytes_per_token": r.kv_bytes_per_token,
        "kv_cache_bytes_per_token_all_layers": r.kv_bytes_per_token_all_layers,
        "recurrent_state_bytes_per_sequence": r.state_bytes_per_sequence,
        "kv_layout": r.cfg.kv_layout,
        "kv_cache_bytes": m.kv_cache,
        "kv_cache_bytes_per_request": m.kv_cache / r.batch,
        "workspace_bytes": m.workspace,
        "overhead_bytes": m.overhead,
        "memory_total_bytes": m.total,
        "capacity_bytes": m.capacity,
        "fits": r.fits,
        "shortfall_bytes": max(0.0, m.total - m.capacity),
        "max_concurrency": r.max_concurrency,
        "max_concurrency_mha_formula": _mha_concurrency(r),
        "ttft_s": r.ttft_s,
        "tpot_s": r.tpot_s,
        "e2e_latency_s": r.e2e_latency_s,
        "throughput_tokens_per_s": r.throughput_tokens_per_s,
        "decode_tokens_per_s": r.decode_tokens_per_s,
        "requests_per_s": r.requests_per_s,
        "bound": {"prefill": r.prefill.bound, "decode": r.decode.bound},
        "prefill": _pass_json(r.prefill, r),
        "decode": _pass_json(r.decode, r),
        "ridge_point_flops_per_byte": r.acc.ridge_point_flops_per_byte,
        "memory_bandwidth_bytes_s": r.acc.memory_bandwidth_bytes_s,
        "decode_compute_bound_from_batch": turn,
        "assumptions": r.assumptions,
        "references": _references(r),
    }
    if sweep:
        out["sweep"] = [{"batch": s.batch, "ttft_s": s.ttft_s, "tpot_s": s.tpot_s,
                         "e2e_latency_s": s.e2e_latency_s,
                         "throughput_tokens_per_s": s.throughput_tokens_per_s,
                         "decode_bound": s.decode.bound, "fits": s.fits} for s in sweep]
    if explain:
        out["explain"] = explain_lines(r)
    return out


def _mha_concurrency(r: ServingResult) -> int:
    """What seed 001's MHA formula (K and V for every query head: 4·L·h bytes per token in fp16)
    would allow in the same free memory."""
    m = r.memory
    free = m.capacity - m.weights - m.workspace - m.overhead
    per_token = 2 * r.spec.num_layers * r.spec.q_dim * r.cfg.kv_dtype_bytes / r.cfg.tp
    return max(0, int(free // (per_token * r.max_seq))) if free > 0 else 0


def _pass_json(p: Any, r: ServingResult) -> dict[str, Any]:
    ops: dict[str, dict[str, Any]] = {}
    for o in p.ops:
        agg = ops.setdefault(o.op, {"flops": 0.0, "bytes": 0.0, "time_s": 0.0})
        agg["flops"] += o.flops
        agg["bytes"] += o.bytes
        agg["time_s"] += o.time_s
    for agg in ops.values():
        agg["intensity_flops_per_byte"] = agg["flops"] / agg["bytes"] if agg["bytes"] else 0.0
        agg["achieved_flops_per_s"] = agg["flops"] / agg["time_s"] if agg["time_s"] else 0.0
        agg["bound"] = ("compute" if agg["intensity_flops_per_byte"]
                        >= r.acc.ridge_point_flops_per_byte else "memory")
    return {"flops": p.flops, "bytes": p.bytes, "compute_s": p.compute_s, "comm_s": p.comm_s,
            "overhead_s": p.overhead_s, "time_s": p.time_s, "bound": p.bound,
            "intensity_flops_per_byte": p.flops / p.bytes if p.bytes else 0.0, "ops": ops}


def _references(r: ServingResult) -> list[dict[str, Any]]:
    """Seed 001/003 rules of thumb beside the exact values."""
    n = count_params(r.spec).total
    spec = r.spec
    mha_kv_token = 2 * 2 * spec.num_layers * spec.hidden_size  # seed 001: 4·L·h bytes (fp16 MHA)
    refs: list[dict[str, Any]] = [
        {"name": "KV cache 4·L·h bytes per token (seed 001, fp16 MHA)",
         "value": mha_kv_token,
         "exact": r.kv_bytes_per_token * r.cfg.tp if r.spec.kv_heads >= r.cfg.tp else None},
        {"name": "inference memory ≈ 1.2 × weights (seed 001)",
         "value": 1.2 * r.memory.weights, "exact": r.memory.total},
        {"name": "prefill FLOPs ≈ 2·N·B·S (seed 003 sec. 2.11)",
         "value": 2 * n * r.batch * r.prompt, "exact": r.prefill.flops * r.cfg.tp},
    ]
    for ref in refs:
        ex = ref["exact"]
        ref["relative_error"] = (ref["value"] - ex) / ex if ex else None
    return refs


def inference_text(r: ServingResult, data: dict[str, Any], sweep: list[ServingResult],
                   explain: bool) -> str:
    m = r.memory
    c = r.cfg
    lines = [
        f"{r.spec.name} on {c.tp * c.pp}× {r.acc.display_name} (tp={c.tp}, pp={c.pp}), weights "
        f"{c.weights.name if c.weights else 'bf16'}, KV {c.kv_dtype_bytes:g} bytes/element, "
        f"batch {r.batch}, prompt {r.prompt}, output {r.output}",
        "",
        "memory per device",
        table([("weights", format_bytes(m.weights)),
               (f"KV cache ({r.batch} × {r.max_seq} tokens)", format_bytes(m.kv_cache)),
               ("prefill workspace", format_bytes(m.workspace)),
               ("runtime overhead", format_bytes(m.overhead)),
               ("total", format_bytes(m.total)),
               (f"usable ({c.mem_util:.0%} of {format_bytes(r.acc.memory_bytes)})",
                format_bytes(m.capacity))], ["", "bytes"]),
        f"KV cache per token per device: {r.kv_bytes_per_token:,.0f} bytes "
        + (f"(MLA latent {r.spec.mla.latent_dim} per layer, {c.kv_layout} layout)" if r.spec.mla
           else f"({r.spec.attention_kind}, {r.spec.kv_heads} KV heads)")
        + (f"; {r.kv_bytes_per_token_all_layers:,.0f} for a token inside every layer's window"
           if r.kv_bytes_per_token_all_layers != r.kv_bytes_per_token
           and not r.state_bytes_per_sequence else "")
        + (f"; recurrent state {format_bytes(r.state_bytes_per_sequence)} per sequence"
           if r.state_bytes_per_sequence else ""),
        f"max concurrency at {r.max_seq} tokens per request: {r.max_concurrency} "
        f"(the MHA formula 4·L·h bytes/token would allow {data['max_concurrency_mha_formula']})",
    ]
    if not r.fits:
        lines.append(f"DOES NOT FIT: {format_bytes(m.total - m.capacity)} over")
        for s in data.get("suggestions", []):
            lines.append(f"  would fit: {s}")
    lines += ["", "roofline (per device)"]
    rows = []
    for name, p in (("prefill", r.prefill), ("decode step", r.decode)):
        rows.append((name, format_flops(p.flops), format_bytes(p.bytes),
                     f"{p.flops / p.bytes:,.0f}", pgettext("bound", p.bound),
                     format_seconds(p.compute_s),
                     format_seconds(p.comm_s), format_seconds(p.overhead_s),
                     format_seconds(p.time_s)))
    lines.append(table(rows, ["pass", "FLOPs", "bytes", "FLOP/B", "bound", "compute", "comm",
                              "launch", "total"]))
    lines.append(f"ridge point {r.acc.ridge_point_flops_per_byte:,.0f} FLOP/byte; decode turns "
                 f"compute-bound from batch {data['decode_compute_bound_from_batch'] or '>4096'}")
    lines += [
        "",
        f"TTFT {format_seconds(r.ttft_s)}   TPOT {format_seconds(r.tpot_s)}   "
        f"end-to-end {format_seconds(r.e2e_latency_s)}",
        f"throughput {r.throughput_tokens_per_s:,.0f} output tokens/s "
        f"({r.decode_tokens_per_s:,.0f} while decoding), {r.requests_per_s:.3g} requests/s",
    ]
    if sweep:
        lines += ["", table([(s.batch, format_seconds(s.ttft_s), format_seconds(s.tpot_s),
                              format_seconds(s.e2e_latency_s), f"{s.throughput_tokens_per_s:,.0f}",
                              pgettext("bound", s.decode.bound), "yes" if s.fits else "no")
                             for s in sweep],
                            ["batch", "TTFT", "TPOT", "e2e", "tokens/s", "decode", "fits"])]
    lines += ["", "references:"]
    for ref in data["references"]:
        err = ref["relative_error"]
        lines.append(f"  {ref['name']}: {ref['value']:,.0f}"
                     + (f" ({100 * err:+.1f}% vs exact)" if err is not None else ""))
    lines += ["", "assumptions: " + "; ".join(f"{k}: {v}" for k, v in r.assumptions.items())]
    if explain:
        lines += ["", "explain:"] + ["  " + x for x in explain_lines(r)]
    return "\n".join(lines)


def explain_lines(r: ServingResult) -> list[str]:
    s, c = r.spec, r.cfg
    kvh = kv_heads_per_rank(s, c.tp)
    return [
        f"KV bytes per token = 2·L·g_rank·d·bytes = 2·{s.num_layers}·{kvh}·{s.head_size}·"
        f"{c.kv_dtype_bytes:g} = {r.kv_bytes_per_token:,.0f}   [seed 003 sec. 2.12; GQA: g KV "
        "heads instead of a]",
        f"KV cache = batch·max_seq·per token (paged in blocks of {c.block_size}) = "
        f"{r.batch}·{r.max_seq}·{r.kv_bytes_per_token:,.0f} ≈ {format_bytes(r.memory.kv_cache)}",
        f"max concurrency = ⌊(usable − weights − workspace − overhead) / KV per request⌋ = "
        f"⌊({r.memory.capacity:.4g} − {r.memory.weights:.4g} − {r.memory.workspace:.4g} − "
        f"{r.memory.overhead:.4g}) / {r.memory.kv_cache / r.batch if r.batch else 0:.4g}⌋ = "
        f"{r.max_concurrency}",
        f"op time = max(FLOPs/(peak·efficiency), bytes/(bandwidth·{r.eff.memory_ceiling:.2f}))"
        "   [Williams et al. "
        "2009, Roofline]",
        f"TTFT = prefill of {r.batch}×{r.prompt} tokens = {format_seconds(r.ttft_s)}; "
        f"TPOT = one decode step at context {r.prompt + max(1, r.output // 2)} = "
        f"{format_seconds(r.tpot_s)}",
        f"e2e = TTFT + (output − 1)·TPOT = {r.ttft_s:.4g} + {r.output - 1}·{r.tpot_s:.4g} = "
        f"{r.e2e_latency_s:.4g} s; throughput = batch·output/e2e = {r.throughput_tokens_per_s:,.0f}"
        " tokens/s",
    ]

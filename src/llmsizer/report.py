"""Text and JSON views of results. Front-ends only: no analysis happens here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llmsizer.analysis.params import ParamCounts, ShardedParams
from llmsizer.formulas import param_references
from llmsizer.specs.hardware import Accelerator
from llmsizer.specs.model import ModelSpec
from llmsizer.units import format_bytes, format_count


def output_width() -> int:
    """COLUMNS if set, else the terminal's width, else 80 (not a terminal)."""
    import os
    import shutil
    import sys

    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return max(40, int(env))
    if sys.stdout.isatty():
        return max(40, shutil.get_terminal_size((80, 24)).columns)
    return 80


def table(rows: Sequence[Sequence[Any]], header: Sequence[str], align: str = "",
          width: int | None = None) -> str:
    """A plain text table; `align` gives 'l' or 'r' per column (default: first l, rest r).

    Cells are translated into the output language (llmsizer.i18n.output_language) before they
    are measured, and measured in terminal cells (a Chinese character takes two), so columns
    line up in every language. Wider than `width` (default: output_width()), the text columns
    wrap inside their cells; if the numbers alone are too wide, each row is printed as a block of
    "header: value" lines."""
    from llmsizer.i18n import translate_cell

    cells = [[translate_cell(str(c)) for c in r] for r in [header, *rows]]
    align = align or "l" + "r" * (len(header) - 1)
    widths = _column_widths(cells, align, width or output_width(), "  ")
    if widths is None:
        return _records(cells)
    lines = _lay_out(cells[0], widths, align, "  ") + ["  ".join("-" * w for w in widths)]
    for r in cells[1:]:
        lines += _lay_out(r, widths, align, "  ")
    return "\n".join(lines)


def columns(rows: Sequence[Sequence[Any]], align: str, indent: str = "  ", gap: str = " ",
            width: int | None = None) -> list[str]:
    """Rows laid out in aligned columns without a header or rule (the "label  value" blocks of
    the text reports), as table() lays out its body: cells translated as whole labels, padded in
    terminal cells, text columns wrapped inside their cells to fit `width` (default:
    output_width()). Too wide even then, rows are printed unpadded."""
    from llmsizer.i18n import display_width, translate_cell

    cells = [[translate_cell(str(c)) for c in r] for r in rows]
    if not cells:
        return []
    n = max(len(r) for r in cells)
    cells = [r + [""] * (n - len(r)) for r in cells]
    align = (align + "l" * n)[:n]
    widths = _column_widths(cells, align, (width or output_width()) - display_width(indent), gap,
                            last_first=True)
    if widths is None:
        return [indent + gap.join(c for c in r if c) for r in cells]
    return [indent + line for r in cells for line in _lay_out(r, widths, align, gap)]


def _column_widths(cells: list[list[str]], align: str, width: int, gap: str,
                   last_first: bool = False) -> list[int] | None:
    """Each column's width in terminal cells so the rows fit `width`, the widest text ('l')
    column narrowed first (with `last_first`, the right-most one: the trailing remarks of a
    columns() block), never below 12 cells; None if they cannot fit."""
    from llmsizer.i18n import display_width

    widths = [max(display_width(r[i]) for r in cells) for i in range(len(cells[0]))]
    total = sum(widths) + len(gap) * (len(widths) - 1)
    while total > width:
        text_cols = [i for i, a in enumerate(align) if a == "l" and widths[i] > 12]
        if not text_cols:
            return None
        i = text_cols[-1] if last_first else max(text_cols, key=lambda c: widths[c])
        cut = min(total - width, widths[i] - 12)
        widths[i] -= cut
        total -= cut
    return widths


def _lay_out(row: list[str], widths: list[int], align: str, gap: str) -> list[str]:
    """One row as one or more lines: cells padded to their column, wider ones wrapped."""
    from llmsizer.i18n import display_width, pad, wrap_cells

    parts = [wrap_cells(c, w) if display_width(c) > w else [c]
             for c, w in zip(row, widths, strict=True)]
    out = []
    for k in range(max(len(p) for p in parts)):
        line = [p[k] if k < len(p) else "" for p in parts]
        out.append(gap.join(pad(c, w, a)
                            for c, w, a in zip(line, widths, align, strict=True)).rstrip())
    return out


def _records(cells: list[list[str]]) -> str:
    """A table too wide for the screen, one block per row."""
    from llmsizer.i18n import display_width, pad

    header, rows = cells[0], cells[1:]
    key = max(display_width(h) for h in header)
    blocks = []
    for r in rows:
        blocks.append("\n".join(f"{pad(h, key, 'r')}: {c}" for h, c in zip(header, r, strict=True)))
    return "\n\n".join(blocks)


def fit_width(text: str, width: int) -> str:
    """Fold every line wider than `width` terminal cells at word boundaries (or between two
    Chinese characters), continuation lines indented by four more cells than the line."""
    from llmsizer.i18n import display_width, wrap_cells

    out = []
    for line in text.split("\n"):
        if display_width(line) <= width:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        more = indent + "    "
        parts = wrap_cells(line, width - display_width(indent), width - display_width(more))
        out += [indent + parts[0]] + [more + part for part in parts[1:]]
    return "\n".join(out)


def describe_model(spec: ModelSpec) -> str:
    ffn = "gated (SwiGLU/GeGLU)" if spec.ffn_kind == "gated" else f"2-matrix ({spec.activation})"
    parts = [
        f"{spec.num_layers} layers", f"hidden {spec.hidden_size}",
        f"{spec.num_heads} heads ({spec.attention_kind}"
        + (f", {spec.kv_heads} KV heads" if spec.attention_kind == "GQA" else "")
        + f", head_dim {spec.head_size})",
        f"FFN {ffn} {spec.ffn_size}", f"vocab {spec.vocab_size}",
        "tied embeddings" if spec.tie_embeddings else "untied embeddings",
        f"{spec.position} positions", spec.norm,
    ]
    if spec.moe:
        m = spec.moe
        moe = f"MoE {m.num_experts} experts top-{m.top_k} (expert FFN {m.expert_ffn_size}"
        if m.shared_experts:
            moe += f", {m.shared_experts} shared of {m.shared_expert_ffn_size}"
        moe += f") in {len(m.moe_layers)} of {spec.num_layers} layers"
        parts.append(moe)
    if spec.parallel_block:
        parts.append("parallel attention+FFN")
    parts += model_features(spec)
    return ", ".join(parts)


def model_features(spec: ModelSpec) -> list[str]:
    """The architecture features beyond the basic decoder, in words."""
    out = []
    if spec.mla:
        m = spec.mla
        out.append(f"MLA (q rank {m.q_lora_rank or 'full'}, kv rank {m.kv_lora_rank}, "
                   f"rope {m.qk_rope_head_dim}, v {m.v_head_dim})")
    if spec.qk_norm != "none":
        out.append(f"q/k norm ({spec.qk_norm})")
    if spec.attention_sinks:
        out.append("attention sinks")
    if spec.attention_output_gate:
        out.append("gated attention output")
    if spec.norm_placement != "pre":
        out.append(f"{spec.norm_placement}-norm")
    if spec.layer_types is not None:
        counts: dict[str, int] = {}
        for t in spec.layer_types:
            counts[t] = counts.get(t, 0) + 1
        out.append("layers: " + ", ".join(f"{n} {t.replace('_', ' ')}" for t, n in counts.items()))
    if spec.sliding_window and spec.layer_types is None:
        out.append(f"sliding window {spec.sliding_window}")
    if spec.mtp_layers:
        out.append(f"{spec.mtp_layers} MTP module(s), counted apart")
    return out


def params_json(spec: ModelSpec, counts: ParamCounts, shards: ShardedParams | None,
                explain: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": spec.name,
        "total": counts.total,
        "active": counts.active,
        "embedding": counts.embedding,
        "non_embedding": counts.non_embedding,
        "tied_embeddings": counts.tied_embeddings,
        "breakdown": counts.breakdown,
        "groups": counts.groups,
        "mtp": counts.mtp,
        "excluded": counts.excluded,
        "approximations": [
            {"name": ref.name, "formula": ref.formula, "substituted": ref.substituted,
             "value": ref.value, "compared_to": target,
             "relative_error": ref.relative_error(getattr(counts, target)),
             "source": ref.source, "assumes": ref.assumes}
            for ref, target in param_references(spec)
        ],
        "source": spec.source,
    }
    if shards is not None:
        out["sharding"] = {
            "tp": shards.tp, "pp": shards.pp, "ep": shards.ep,
            "per_device_by_stage": list(shards.per_stage),
            "layers_by_stage": [len(s) for s in shards.stage_layers],
            "max_per_device": shards.max_per_device,
        }
    if explain:
        out["explain"] = counts.explanation.to_json()
    return out


def params_text(spec: ModelSpec, counts: ParamCounts, shards: ShardedParams | None) -> str:
    lines = [f"{spec.name}: {describe_model(spec)}"]
    if spec.source:
        lines.append(f"source: {spec.source}")
    lines.append("")
    summary = [
        ("total", counts.total),
        ("active per token", counts.active),
        ("embedding", counts.embedding),
        ("non-embedding", counts.non_embedding),
    ]
    lines.append(table([(k, f"{v:,}", format_count(v)) for k, v in summary],
                       ["parameters", "exact", ""]))
    lines.append("")
    rows: list[tuple[object, ...]] = [(k, f"{v:,}", f"{100 * v / counts.total:.2f}%")
                                      for k, v in counts.breakdown.items()]
    lines.append(table(rows, ["component (all layers)", "parameters", "share"]))
    if counts.tied_embeddings:
        lines.append("lm_head shares embedding.tokens.weight (tied): counted once")
    if counts.mtp:
        lines.append(f"multi-token-prediction modules: {counts.mtp:,} ({format_count(counts.mtp)}) "
                     "more, not in the total (transformers does not build them); the released "
                     f"checkpoint also stores copies of the embedding and output head: "
                     f"{counts.mtp + counts.mtp_checkpoint_copies:,} "
                     f"({format_count(counts.mtp + counts.mtp_checkpoint_copies)}) in all")
    if counts.excluded:
        lines.append(f"excluded: {counts.excluded}")
    lines.append("")
    refs = []
    for ref, target in param_references(spec):
        exact = getattr(counts, target)
        refs.append((ref.formula, f"{int(ref.value):,}", target.replace("_", "-"),
                     f"{100 * ref.relative_error(exact):+.2f}%"))
    lines.append(table(refs, ["closed-form approximation", "value", "vs exact", "error"],
                       "lrlr"))
    lines.append("sources: `--explain` or `--json` name each formula's source and assumptions")
    if shards is not None:
        lines.append("")
        lines.append(f"per device with tp={shards.tp} pp={shards.pp} ep={shards.ep} "
                     "(Megatron-LM sharding):")
        rows = [(s, len(layers), f"{n:,}", format_count(n),
                 format_bytes(2 * n))
                for s, (layers, n) in enumerate(zip(shards.stage_layers, shards.per_stage, strict=True))]
        lines.append(table(rows, ["stage", "layers", "params/device", "", "bf16 weights"]))
    return "\n".join(lines)


def params_explain(spec: ModelSpec, counts: ParamCounts) -> str:
    from llmsizer.explain import render

    lines = [render(counts.explanation), "", "closed-form approximations:"]
    for ref, target in param_references(spec):
        exact = getattr(counts, target)
        lines.append(f"  {ref.name} = {ref.substituted} = {int(ref.value):,} params; "
                     f"{100 * ref.relative_error(exact):+.2f}% vs exact {target.replace('_', '-')} "
                     f"{exact:,}\n    [{ref.source}] assumes: {ref.assumes}")
    return "\n".join(lines)


def accelerator_json(acc: Accelerator) -> dict[str, Any]:
    return {
        "name": acc.name,
        "display_name": acc.display_name,
        "vendor": acc.vendor,
        "aliases": list(acc.aliases),
        "peak_tflops_dense": {k: v / 1e12 for k, v in acc.peak_flops.items()},
        "memory_bytes": acc.memory_bytes,
        "memory_stated": acc.memory_stated,
        "memory_bandwidth_bytes_s": acc.memory_bandwidth_bytes_s,
        "intra_node_link": acc.intra_node_link_name,
        "intra_node_link_bytes_s": acc.intra_node_link_bytes_s,
        "sm_count": acc.sm_count,
        "tensor_cores_per_sm": acc.tensor_cores_per_sm,
        "fp16_flops_per_tensor_core_per_clock": acc.fp16_flops_per_tensor_core_per_clock,
        "boost_clock_mhz": acc.boost_clock_mhz,
        "tdp_w": acc.tdp_w,
        "power_limit_w": acc.power_limit_w,
        "sustained_clock_ratio": acc.clock_ratio,
        "ridge_point_flops_per_byte": acc.ridge_point_flops_per_byte,
        "sources": acc.sources,
        "notes": acc.notes,
        **acc.extras,
    }


def accelerator_explain(acc: Accelerator) -> str:
    lines = [f"{acc.display_name} ({acc.name})"]
    derived = acc.derived_peak_flops
    key = "bf16" if "bf16" in acc.peak_flops else "fp16"
    if derived is not None:
        lines.append(
            f"  peak dense {key} tensor FLOP/s = SMs · tensor cores/SM · FLOPs/(tensor core·clock)"
            f" · clock\n    = {acc.sm_count} · {acc.tensor_cores_per_sm} · "
            f"{acc.fp16_flops_per_tensor_core_per_clock} · {acc.boost_clock_mhz:g} MHz"
            f"\n    = {derived / 1e12:.1f} TFLOP/s (datasheet: {acc.peak_flops[key] / 1e12:g})"
            f"   [{_sources(acc, 'sm_count', 'clock')}]")
        per_clock = acc.fp16_flops_per_tensor_core_per_clock or 0
        if per_clock == 512:
            lines.append("    (512 = 2·(8·4·8): one 8×4×8 matrix multiply-add per clock per tensor "
                         "core, seed 003 sec. 1.3)")
    else:
        lines.append("  (SM count, tensor cores per SM or clock not public: the peak is the "
                     "datasheet's)")
    for dtype, v in acc.peak_flops.items():
        unit = "TOP/s  " if dtype.startswith("int") else "TFLOP/s"
        lines.append(f"  peak {dtype:5s} {v / 1e12:10.1f} {unit} dense   "
                     f"[{acc.sources.get('peak_tflops', '')}]")
    if acc.clock_ratio < 1:
        lines.append(f"  power limit {acc.power_limit_w:g} W of {acc.tdp_w:g} W rated: compute at "
                     f"({acc.power_limit_w:g}/{acc.tdp_w:g})^(1/3) = {acc.clock_ratio:.3f} of "
                     "the rated clock (P ∝ C·V²·f, V rising with f; the peaks above stay as "
                     f"stated, for MFU)   [{acc.sources.get('power', '')}]")
    for dtype, m in (acc.extras.get("measured_matmul") or {}).items():
        depth = f", best shape reducing over {m['depth']:g}" if m.get("depth") else ""
        lines.append(f"  measured matmul {dtype}: {m['tflops']:g} TFLOP/s{depth} (replaces the "
                     f"generation's measured ceiling for this part)   "
                     f"[{acc.sources.get('measured_matmul', '')}]")
    lines.append(f"  memory {format_bytes(acc.memory_bytes)} (datasheet: {acc.memory_stated})"
                 f"   [{acc.sources.get('memory', '')}]")
    lines.append(f"  memory bandwidth {acc.memory_bandwidth_bytes_s / 1e9:,.0f} GB/s"
                 f"   [{acc.sources.get('bandwidth', '')}]")
    lines.append(f"  ridge point = peak {key} / bandwidth = {acc.peak_flops[key] / 1e12:g}e12 / "
                 f"{acc.memory_bandwidth_bytes_s / 1e9:g}e9 = "
                 f"{acc.ridge_point_flops_per_byte:.0f} FLOP/byte (seed 001: roofline)")
    if acc.intra_node_link_bytes_s:
        lines.append(f"  intra-node link {acc.intra_node_link_name}: "
                     f"{acc.intra_node_link_bytes_s / 1e9:,.0f} GB/s"
                     f"   [{acc.sources.get('link', '')}]")
    if acc.notes:
        lines.append(f"  notes: {acc.notes}")
    return "\n".join(lines)


def _sources(acc: Accelerator, *keys: str) -> str:
    seen: list[str] = []
    for k in keys:
        s = acc.sources.get(k, "")
        if s and s not in seen:
            seen.append(s)
    return "; ".join(seen)


def dumps(obj: Any) -> str:
    """JSON for programs: byte counts (keys naming bytes, not rates) as integers, and no NaN or
    infinity anywhere (a non-finite number is a bug; ImpossibleResultError names its key)."""
    return json.dumps(_clean(obj, ""), indent=2, ensure_ascii=False, allow_nan=False)


def _is_byte_count(key: str) -> bool:
    return "bytes" in key and not key.endswith("_s") and "per_byte" not in key


def _clean(obj: Any, path: str, byte_count: bool = False) -> Any:
    import math

    import numpy as np

    from llmsizer.errors import ImpossibleResultError

    if isinstance(obj, dict):
        return {k: _clean(v, f"{path}.{k}" if path else str(k),
                          k not in _NOT_BYTES and (byte_count or _is_byte_count(str(k))
                                                   or k in _BYTE_GROUPS))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v, f"{path}[{i}]", byte_count) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, str, np.bool_)):
        return bool(obj) if isinstance(obj, np.bool_) else obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if not math.isfinite(v):
            raise ImpossibleResultError(f"{path} = {v} in the JSON result")
        return int(round(v)) if byte_count else v
    return obj


# Objects whose values are all byte counts though their keys do not say so.
_BYTE_GROUPS = {"memory_per_device", "other_parts", "memory_per_stage"}
_NOT_BYTES = {"stage", "in_flight_microbatches"}

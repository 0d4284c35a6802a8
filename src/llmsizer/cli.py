"""The `llmsizer` command: words in, specs built, analyses run, results printed.

Every bad input ends as one line on stderr naming the field, the value and what is allowed, with
exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from llmsizer.errors import LlmsizerError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (no usage block)
        self.exit(EXIT_USAGE, f"llmsizer: error: {message}\n")


def _positive_int(field: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{field}={text!r}: expected a positive integer") \
                from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{field}={v}: expected a positive integer")
        return v

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="llmsizer", description="Exact, explained and verified sizing of "
                "transformer models: parameters, FLOPs, memory, time.")
    from llmsizer import __version__

    p.add_argument("--version", action="version", version=f"llmsizer {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    m = sub.add_parser("models", help="list the model catalog",
                       description="List the catalog's models with their shapes and exact sizes.")
    m.add_argument("--json", action="store_true", help="print JSON")

    g = sub.add_parser("gpus", help="list the accelerator catalog, or show one",
                       description="List accelerators (dense peak TFLOP/s, memory, bandwidth), "
                       "or show one with --explain for the derivation of its peak.")
    g.add_argument("name", nargs="?", help="an accelerator name/alias or a JSON file")
    g.add_argument("--json", action="store_true", help="print JSON")
    g.add_argument("--explain", action="store_true", help="derive the peak and ridge point")

    pa = sub.add_parser(
        "params", help="exact parameter counts of a model",
        description="Exact parameter count (total, active, per component, per device) of a "
        "catalog model or a Hugging Face config.json, beside the classic approximations.")
    pa.add_argument("model", help="catalog name, alias, HF repo id, or path to a config.json")
    pa.add_argument("--tp", type=_positive_int("tp"), default=1, help="tensor-parallel size")
    pa.add_argument("--pp", type=_positive_int("pp"), default=1, help="pipeline-parallel size")
    pa.add_argument("--ep", type=_positive_int("ep"), default=1, help="expert-parallel size")
    pa.add_argument("--json", action="store_true", help="print one JSON object")
    pa.add_argument("--explain", action="store_true",
                    help="print every number as its formula with values and source")
    from llmsizer import cli_train

    cli_train.add_parser(sub, _positive_int)
    from llmsizer import cli_infer

    cli_infer.add_parser(sub, _positive_int)
    from llmsizer import cli_plan

    cli_plan.add_parsers(sub, _positive_int)
    from llmsizer import cli_validate

    cli_validate.add_parsers(sub, _positive_int)
    return p


def cmd_models(args: argparse.Namespace) -> str:
    from llmsizer.analysis.params import count_params
    from llmsizer.catalog import list_models
    from llmsizer.report import dumps, table
    from llmsizer.units import format_count

    entries = list_models()
    specs = [(e, e.spec()) for e in entries]
    if args.json:
        out = []
        for e, s in specs:
            c = count_params(s)
            out.append({
                "name": e.name, "display_name": e.display_name, "family": e.family,
                "aliases": list(e.aliases), "hf_repo": e.hf_repo, "source": e.source,
                "model_type": e.config.get("model_type"),
                "num_layers": s.num_layers, "hidden_size": s.hidden_size,
                "num_heads": s.num_heads, "num_kv_heads": s.kv_heads, "head_dim": s.head_size,
                "ffn_size": s.ffn_size, "ffn_kind": s.ffn_kind, "vocab_size": s.vocab_size,
                "tie_embeddings": s.tie_embeddings, "position": s.position, "norm": s.norm,
                "max_seq_len": s.max_seq_len,
                "moe": None if s.moe is None else {
                    "num_experts": s.moe.num_experts, "top_k": s.moe.top_k,
                    "expert_ffn_size": s.moe.expert_ffn_size,
                    "shared_experts": s.moe.shared_experts, "moe_layers": len(s.moe.moe_layers)},
                "params_total": c.total, "params_active": c.active,
                "published_params": e.published_params,
            })
        return dumps(out)
    rows = []
    for e, s in specs:
        c = count_params(s)
        rows.append((e.name, s.num_layers, s.hidden_size, f"{s.num_heads}/{s.kv_heads}",
                     s.ffn_size, s.vocab_size, format_count(c.total),
                     format_count(c.active) if c.active != c.total else ""))
    return table(rows, ["model", "layers", "hidden", "heads/kv", "ffn", "vocab", "params",
                        "active"])


def cmd_gpus(args: argparse.Namespace) -> str:
    from llmsizer.catalog import get_accelerator, list_accelerators
    from llmsizer.report import accelerator_explain, accelerator_json, dumps, table

    accs = [get_accelerator(args.name)] if args.name else list_accelerators()
    if args.json:
        data = [accelerator_json(a) for a in accs]
        return dumps(data[0] if args.name else data)
    if args.explain or args.name:
        return "\n\n".join(accelerator_explain(a) for a in accs)

    def tf(a, k):  # type: ignore[no-untyped-def]
        v = a.peak_flops.get(k)
        return f"{v / 1e12:g}" if v else "-"

    rows = [(a.name, tf(a, "bf16"), tf(a, "fp16"), tf(a, "fp8"), tf(a, "int8"), tf(a, "tf32"),
             a.memory_stated, f"{a.memory_bandwidth_bytes_s / 1e9:,.0f}",
             f"{a.intra_node_link_bytes_s / 1e9:,.0f}" if a.intra_node_link_bytes_s else "-")
            for a in accs]
    return table(rows, ["gpu", "bf16 TF", "fp16 TF", "fp8 TF", "int8 TOPS", "tf32 TF", "memory",
                        "HBM GB/s", "link GB/s"]) + "\n(dense peaks; `llmsizer gpus NAME --explain`)"


def cmd_params(args: argparse.Namespace) -> str:
    from llmsizer.analysis.params import count_params, shard_params
    from llmsizer.catalog import get_model
    from llmsizer.report import dumps, params_explain, params_json, params_text

    spec = get_model(args.model)
    counts = count_params(spec)
    sharded = (args.tp, args.pp, args.ep) != (1, 1, 1)
    shards = shard_params(spec, args.tp, args.pp, args.ep) if sharded else None
    if args.json:
        return dumps(params_json(spec, counts, shards, args.explain))
    text = params_text(spec, counts, shards)
    if args.explain:
        text += "\n\n" + params_explain(spec, counts)
    return text


# Heavier commands live in their own modules, imported only when run (start-up stays fast).
LAZY_COMMANDS = {
    "train": ("llmsizer.cli_train", "run"),
    "infer": ("llmsizer.cli_infer", "run"),
    "plan": ("llmsizer.cli_plan", "run_plan"),
    "plan-serve": ("llmsizer.cli_plan", "run_plan_serve"),
    "validate": ("llmsizer.cli_validate", "run_validate"),
    "calibrate": ("llmsizer.cli_validate", "run_calibrate"),
}


def _lazy(command: str) -> Callable[[argparse.Namespace], str]:
    module, function = LAZY_COMMANDS[command]

    def run(args: argparse.Namespace) -> str:
        return getattr(importlib.import_module(module), function)(args)  # type: ignore[no-any-return]

    return run


COMMANDS: dict[str, Callable[[argparse.Namespace], str]] = {
    "models": cmd_models, "gpus": cmd_gpus, "params": cmd_params,
    **{name: _lazy(name) for name in LAZY_COMMANDS},
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        out = COMMANDS[args.command](args)
    except LlmsizerError as e:
        print(f"llmsizer: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    with contextlib.suppress(BrokenPipeError):  # `llmsizer models | head`
        print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The `llmsizer` command: words in, specs built, analyses run, results printed.

Every bad input ends as one line on stderr naming the flag (or the file and key), the value and
what is allowed, with exit status 2; never a traceback. Exit statuses:

  0  computed, and it fits
  2  bad input (one line on stderr)
  3  computed, but it does not fit in memory (train, infer) or no layout fits (plan, plan-serve)
  4  a result broke a physical invariant (a bug in llmsizer: please report it)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from llmsizer.errors import ImpossibleResultError, LlmsizerError, SpecError

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DOES_NOT_FIT = 3
EXIT_IMPOSSIBLE = 4
EXIT_STATUS_HELP = ("exit status: 0 computed and fits; 2 bad input (one line on stderr); "
                    "3 computed but does not fit (no layout fits); 4 internal check failed (a bug)")

# Upper bounds that keep every command's work bounded; far beyond any real run.
MAX_GPUS = 2**20
MAX_PLAN_GPUS = 2**16  # the planner enumerates divisors and layouts of the GPU count
MAX_PARALLEL = 2**16  # tp, pp, cp, ep
MAX_LENGTH = 2**24  # tokens in one sequence / prompt / output (16M)
MAX_BATCH = 2**24
MAX_MICRO_BATCH = 2**16
MAX_TOKENS = 1e18  # training tokens


class _Notes(threading.local):
    """One-line notes a command leaves for stderr (see cli_train.note); one list per thread,
    since the web server runs commands on several threads at once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def append(self, text: str) -> None:
        self.lines.append(text)

    def clear(self) -> None:
        self.lines.clear()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.lines))


NOTES = _Notes()


@dataclass(frozen=True)
class Outcome:
    """What a command prints and how it ends. `wrap`: fold long lines to the terminal width
    (never JSON or an export, which are read by programs)."""

    text: str
    status: int = EXIT_OK
    wrap: bool = True


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (no usage block)
        # "argument -o/--output-file: =X is not allowed" -> "--output-file=X is not allowed"
        message = re.sub(r"^argument ([^:]+): =",
                         lambda m: m.group(1).split("/")[-1] + "=", message)
        self.exit(EXIT_USAGE, f"llmsizer: error: {' '.join(message.split())}\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that states the default each flag takes (unless its help says it already)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default not in (None, False, "", argparse.SUPPRESS) and "default" not in text
                and action.option_strings and action.nargs != 0):
            text += f" (default: {default})"
        return text


def _refuse(text: str, allowed: str) -> argparse.ArgumentTypeError:
    shown = text if len(text) <= 40 else text[:37] + "..."
    if not shown or not shown.isprintable() or " " in shown:
        shown = repr(shown)
    return argparse.ArgumentTypeError(f"={shown} is not allowed: {allowed}")


def arg_int(low: int = 1, high: int = MAX_BATCH) -> Callable[[str], int]:
    """An integer flag in [low, high]."""
    allowed = (f"a positive integer up to {high:,}" if low == 1 else
               f"an integer from {low:,} to {high:,}")

    def parse(text: str) -> int:
        t = text.strip().replace("_", "")
        if not (t.isascii() and t.lstrip("+-").isdigit()) or len(t) > 30:
            raise _refuse(text, allowed)
        v = int(t)
        if not low <= v <= high:
            raise _refuse(text, allowed)
        return v

    return parse


def arg_length(low: int = 1, high: int = MAX_LENGTH) -> Callable[[str], int]:
    """A length in tokens with binary k/M suffixes: 4k = 4,096, 128k = 131,072."""
    from llmsizer.units import parse_length

    allowed = (f"a number of tokens from {low:,} to {high:,} (suffixes k = 1,024 and "
               "M = 1,048,576: 4k, 128k)")

    def parse(text: str) -> int:
        try:
            v = parse_length(text)
        except SpecError:
            raise _refuse(text, allowed) from None
        if not low <= v <= high:
            raise _refuse(text, allowed)
        return v

    return parse


def arg_float(low: float, high: float, *, low_open: bool = False, high_open: bool = False,
              what: str = "a number") -> Callable[[str], float]:
    """A finite number in the interval (low/high open or closed)."""
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"
    allowed = f"{what} in {lo}{low:g}, {high:g}{hi}"

    def parse(text: str) -> float:
        try:
            v = float(text.strip().replace("_", ""))
        except ValueError:
            raise _refuse(text, allowed) from None
        if (not math.isfinite(v) or v < low or v > high or (low_open and v == low)
                or (high_open and v == high)):
            raise _refuse(text, allowed)
        return v

    return parse


def arg_count(high: float = MAX_TOKENS) -> Callable[[str], float]:
    """A positive count with decimal suffixes: 15T, 6.4M, 1e9."""
    from llmsizer.units import parse_count

    allowed = f"a positive number up to {high:g}, with an optional suffix k, M, B/G, T (e.g. 15T)"

    def parse(text: str) -> float:
        try:
            v = parse_count(text)
        except SpecError:
            raise _refuse(text, allowed) from None
        if not 0 < v <= high:
            raise _refuse(text, allowed)
        return v

    return parse


def _positive_int(field: str, high: int = MAX_BATCH):  # type: ignore[no-untyped-def]
    """The positive-integer flag type the command modules are handed (kept for their API)."""
    return arg_int(1, high)


MODEL_HELP = "catalog name, alias, HF repo id, or path to a config.json"


def add_model_and_gpu(p: argparse.ArgumentParser) -> None:
    """The MODEL argument and --gpu flag every analysis command takes, defined once."""
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--gpu", required=True, help="accelerator name/alias or JSON file")
    p.add_argument("--power-limit", type=arg_float(1, 100_000, low_open=True, what="watts"),
                   metavar="W", help="run the accelerator under this power limit: compute at "
                   "(W / rated TDP)^(1/3) of its clock, memory and links unchanged (default: "
                   "the catalog's limit where it states one, else the rated power)")


def add_moe_options(p: argparse.ArgumentParser) -> None:
    """--moe-imbalance, --moe-dispatcher, --moe-a2a-overlap and --cuda-graphs, as train and plan
    take them."""
    from llmsizer.analysis.comm import MOE_DISPATCHERS
    from llmsizer.analysis.op_costs import CUDA_GRAPHS
    from llmsizer.analysis.training import A2A_OVERLAP_FRAMEWORKS, MAX_MOE_IMBALANCE

    p.add_argument("--moe-imbalance", type=arg_float(1, MAX_MOE_IMBALANCE, what="a ratio"),
                   default=1.0, metavar="R", help="MoE: tokens the busiest expert-parallel rank "
                   "receives over the mean; its experts and all-to-all gate the step (default: 1, "
                   "balanced, as published MoE benchmarks force it; Megatron-MoE-ModelZoo "
                   "measures natural dropless routing of Qwen3-235B 8-20 %% slower)")
    p.add_argument("--moe-dispatcher", choices=MOE_DISPATCHERS, default="alltoall",
                   help="MoE: how tokens reach their experts: alltoall (NCCL all-to-all, one "
                   "copy per token and expert; Megatron-Core's default) or a deduplicating "
                   "library, deepep or hybridep (one copy per destination GPU, across nodes one "
                   "per destination node, forwarded over NVLink) (default: %(default)s)")
    p.add_argument("--moe-a2a-overlap", action="store_true",
                   help="MoE: hide each micro-batch's expert all-to-all under another "
                   "micro-batch's compute (Megatron-Core --overlap-moe-expert-parallel-comm; "
                   "frameworks: " + ", ".join(A2A_OVERLAP_FRAMEWORKS) + "; default: off)")
    p.add_argument("--cuda-graphs", choices=CUDA_GRAPHS, default="none",
                   help="what CUDA graphs capture; their kernels then cost no launch each: attn "
                   "(attention blocks), moe_router (MoE router and preprocessing; Megatron-Core "
                   "--cuda-graph-scope), both, or full (whole layers; MoE layers only with token "
                   "drop-and-pad) (default: %(default)s: every kernel launched eagerly)")


def accelerator_arg(args: argparse.Namespace) -> Any:
    """The accelerator --gpu names, under --power-limit when one is given."""
    from dataclasses import replace

    from llmsizer.catalog import get_accelerator

    acc = get_accelerator(args.gpu)
    limit = getattr(args, "power_limit", None)
    if limit is None:
        return acc
    if acc.tdp_w is None:
        raise SpecError("power_limit", limit, f"nothing for {acc.name}: its rated TDP (tdp_w) "
                        "is not known, so the clock at a limit cannot be derived")
    return replace(acc, power_limit_w=limit)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="llmsizer", description="Exact, explained and verified sizing of "
                "transformer models: parameters, FLOPs, memory, time.", epilog=EXIT_STATUS_HELP,
                formatter_class=_HelpFormatter)
    from llmsizer import __version__

    p.add_argument("--version", action="version", version=f"llmsizer {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add = sub.add_parser

    def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
        kw.setdefault("formatter_class", _HelpFormatter)
        kw.setdefault("epilog", EXIT_STATUS_HELP)
        parser = _add(name, **kw)
        parser.add_argument("--lang", choices=("en", "zh"), default="en",
                            help="language of labels and messages (zh: Chinese)")
        return parser  # type: ignore[no-any-return]

    sub.add_parser = add_parser  # type: ignore[method-assign]

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
    pa.add_argument("model", help=MODEL_HELP)
    pa.add_argument("--tp", type=arg_int(1, MAX_PARALLEL), default=1,
                    help="tensor-parallel size")
    pa.add_argument("--pp", type=arg_int(1, MAX_PARALLEL), default=1,
                    help="pipeline-parallel size")
    pa.add_argument("--ep", type=arg_int(1, MAX_PARALLEL), default=1,
                    help="expert-parallel size")
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
    from llmsizer import cli_simulate

    cli_simulate.add_parser(sub, _positive_int)
    from llmsizer import cli_finetune

    cli_finetune.add_parser(sub, _positive_int)
    from llmsizer import cli_serve

    cli_serve.add_parser(sub)
    from llmsizer import cli_measure

    cli_measure.add_parser(sub, _positive_int)
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
    "simulate": ("llmsizer.cli_simulate", "run"),
    "finetune": ("llmsizer.cli_finetune", "run"),
    "serve": ("llmsizer.cli_serve", "run"),
    "measure": ("llmsizer.cli_measure", "run"),  # torch only when it runs
}


def _lazy(command: str) -> Callable[[argparse.Namespace], str | Outcome]:
    module, function = LAZY_COMMANDS[command]

    def run(args: argparse.Namespace) -> str | Outcome:
        return getattr(importlib.import_module(module), function)(args)  # type: ignore[no-any-return]

    return run


COMMANDS: dict[str, Callable[[argparse.Namespace], str | Outcome]] = {
    "models": cmd_models, "gpus": cmd_gpus, "params": cmd_params,
    **{name: _lazy(name) for name in LAZY_COMMANDS},
}


# Internal field names a SpecError may carry, as the user wrote them.
USER_NAMES = {
    "matmul_ceiling": "--matmul-efficiency", "memory_ceiling": "--memory-efficiency",
    "comm_efficiency": "--comm-efficiency", "grad_accum": "--global-batch (gradient "
    "accumulation = global batch / (micro-batch · dp))", "virtual_stages": "--schedule",
    "num_layers": "the model's layer count (num_hidden_layers)", "dtype": "--precision/--weights",
    "offload_device": "--offload-device", "sequence_parallel": "--sequence-parallel",
}


def _flags_of(parser: argparse.ArgumentParser, command: str) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices[command]._option_string_actions)
    return set()


def user_message(e: LlmsizerError, flags: set[str]) -> str:
    """The error as one line, naming the user's flag rather than an internal field."""
    if not isinstance(e, SpecError):
        return " ".join(str(e).split())
    name = USER_NAMES.get(e.field)
    flag = "--" + e.field.replace("_", "-")
    if name is None and flag in flags:
        name = flag
    if name is None:
        return " ".join(str(e).split())
    value = e.value if not isinstance(e.value, str) or len(e.value) < 200 else \
        e.value[:197] + "..."
    text = f"{name}={value!r} is not allowed: {e.allowed}"
    if e.hint:
        text += f" ({e.hint})"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a refused flag (already printed)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    NOTES.clear()
    from llmsizer.i18n import output_language

    try:
        with output_language(getattr(args, "lang", "en")):  # tables translate as they lay out
            out = COMMANDS[args.command](args)
    except LlmsizerError as e:
        from llmsizer.i18n import translate_text

        print(translate_text(f"llmsizer: error: {user_message(e, _flags_of(parser, args.command))}",
                             getattr(args, "lang", "en")), file=sys.stderr)
        return EXIT_USAGE
    except ImpossibleResultError as e:
        print(f"llmsizer: internal check failed: {' '.join(str(e).split())} (a bug in llmsizer; "
              "please report it with the command line)", file=sys.stderr)
        return EXIT_IMPOSSIBLE
    for line in NOTES:  # what was assumed, once the command succeeded (errors stay one line)
        print(f"llmsizer: note: {' '.join(line.split())}", file=sys.stderr)
    NOTES.clear()
    if isinstance(out, str):
        out = Outcome(out)
    text = out.text
    if out.wrap and not getattr(args, "json", False):
        from llmsizer.report import fit_width, output_width

        if getattr(args, "lang", "en") != "en":  # labels and titles; numbers and JSON stay
            from llmsizer.i18n import translate_text

            text = translate_text(text, args.lang)
        text = fit_width(text, output_width())  # in terminal cells, after translating
    with contextlib.suppress(BrokenPipeError):  # `llmsizer models | head`
        print(text)
    return out.status


if __name__ == "__main__":
    raise SystemExit(main())

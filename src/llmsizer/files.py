"""One reader for every file llmsizer reads, and the declared schema of each kind of file.

Model `config.json` files, `--gpu FILE`, `--calibration FILE` and validation case files all come
through `read_json`: the name is checked (length, a regular file, not a directory or a device),
the size is capped before reading, the bytes must be UTF-8 without a byte-order mark, nesting is
capped before parsing, JSON must be strict (no NaN/Infinity, no duplicate keys), and the result is
checked against the file kind's schema (types, ranges, required keys, unknown keys named). Every
refusal is one line naming the file, the key path, the value and what is allowed.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmsizer.errors import LlmsizerError, did_you_mean

MAX_FILE_BYTES = 16 * 2**20  # the largest packaged file is ~200 kB; configs are a few kB
MAX_DEPTH = 64  # JSON nesting; real configs nest 3-4 levels
MAX_NAME_BYTES = 255  # one path component (NAME_MAX on Linux, macOS, Windows)
MAX_PATH_BYTES = 4096  # PATH_MAX on Linux


class FileInputError(LlmsizerError):
    """A file that cannot be read or does not follow its schema: names file, key and value."""

    def __init__(self, message: str, origin: str = "", reason: str = ""):
        super().__init__(message)
        self.origin = origin
        self.reason = reason or message


def _fail(origin: str, reason: str) -> FileInputError:
    return FileInputError(f"{origin}: {reason}", origin, reason)


# ---------------------------------------------------------------------------------------------
# Reading: name, size, encoding, nesting, strict JSON
# ---------------------------------------------------------------------------------------------

def check_file_name(name: str, what: str) -> None:
    """Refuse names the operating system would refuse with a traceback-prone error."""
    if not name:
        raise FileInputError(f"an empty file name is not a {what}")
    if "\0" in name:
        raise FileInputError(f"{name!r}: a file name cannot contain a NUL character")
    raw = os.fsencode(name)
    if len(raw) > MAX_PATH_BYTES:
        raise FileInputError(f"{name[:40]}…: a path of {len(raw):,} bytes is not allowed "
                             f"(at most {MAX_PATH_BYTES:,} bytes)")
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > MAX_NAME_BYTES:
        raise FileInputError(f"{name[:40]}…: a file name component of {len(longest):,} bytes is "
                             f"not allowed (at most {MAX_NAME_BYTES} bytes)")


def is_existing_path(name: str) -> bool:
    """True when `name` names something on disk; never raises (long names, NUL bytes)."""
    try:
        check_file_name(name, "file")
        os.stat(name)
    except (FileInputError, OSError, ValueError):
        return False
    return True


def is_directory(name: str) -> bool:
    try:
        check_file_name(name, "file")
        return stat.S_ISDIR(os.stat(name).st_mode)
    except (FileInputError, OSError, ValueError):
        return False


def read_text(name: str, what: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The file's text: a regular file of at most `max_bytes`, UTF-8 without a byte-order mark."""
    check_file_name(name, what)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise _fail(name, f"no such file (expected a {what})") from None
    except OSError as e:
        raise _fail(name, f"cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _fail(name, f"is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise _fail(name, f"not a regular file (a device, pipe or socket); "
                             f"a {what} is a JSON file")
    if st.st_size > max_bytes:
        raise _fail(name, f"{st.st_size:,} bytes is not allowed for a {what} "
                             f"(at most {max_bytes:,} bytes)")
    try:
        with open(name, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise _fail(name, f"cannot read ({e.strerror})") from None
    if len(raw) > max_bytes:
        raise _fail(name, f"more than {max_bytes:,} bytes is not allowed for a {what}")
    return decode_utf8(raw, name)


def decode_utf8(raw: bytes, name: str) -> str:
    for bom, encoding in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                          (codecs.BOM_UTF8, "UTF-8 with a byte-order mark"),
                          (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if raw.startswith(bom):
            raise _fail(name, f"the file is {encoding}; save it as UTF-8 without a "
                                 "byte-order mark")
    if b"\0" in raw:
        raise _fail(name, "the file holds NUL bytes (UTF-16 or binary?); save it as "
                             "UTF-8 JSON")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail(name, f"not UTF-8 (byte 0x{raw[e.start]:02x} at offset "
                             f"{e.start:,}); save it as UTF-8") from None


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays/objects, counted without parsing (strings skipped)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def parse_json(text: str, name: str, max_depth: int = MAX_DEPTH) -> Any:
    """Strict JSON: depth capped, no NaN/Infinity, no out-of-range numbers, no duplicate keys."""
    depth = nesting_depth(text)
    if depth > max_depth:
        raise _fail(name, f"JSON nested {depth:,} levels deep is not allowed (at most "
                             f"{max_depth})")

    def constant(word: str) -> Any:
        raise _fail(name, f"{word} is not allowed in JSON (use a finite number)")

    def number(text: str) -> float:
        v = float(text)
        if not math.isfinite(v):
            raise _fail(name, f"the number {text[:40]} is out of range (not finite)")
        return v

    def integer(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise _fail(name, f"an integer of {len(text):,} digits is not allowed") \
                from None

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise _fail(name, f"key {k!r} appears twice in one object")
            out[k] = v
        return out

    if not text.strip():
        raise _fail(name, "the file is empty (expected JSON)")
    try:
        return json.loads(text, parse_constant=constant, parse_float=number, parse_int=integer,
                          object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise _fail(name, f"broken JSON at line {e.lineno} column {e.colno}: "
                             f"{e.msg}") from None
    except RecursionError:
        raise _fail(name, "JSON nested too deeply") from None


def read_json(name: str | os.PathLike[str], kind: str,
              error: type[LlmsizerError] = FileInputError) -> Any:
    """Read and check a file of `kind` (a key of SCHEMAS): its data, checked against the schema.

    Refusals are `error` (the caller's error class) with a one-line message naming the file."""
    path = os.fspath(name)
    what = SCHEMAS[kind].what
    try:
        data = parse_json(read_text(path, what), path)
        SCHEMAS[kind].check(data, path)
    except FileInputError as e:
        if error is FileInputError:
            raise
        raise error(str(e)) from None
    return data


def read_model_config(name: str | os.PathLike[str], error: type[LlmsizerError] = FileInputError
                      ) -> tuple[dict[str, Any], str]:
    """A Hugging Face config.json (or a folder holding one, or a catalog-format entry)."""
    path = os.fspath(name)
    if is_directory(path):
        path = os.path.join(path, "config.json")
    return read_json(path, "model", error), path


# ---------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------

def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Field:
    """What one key may hold. `kinds`: int, number, bool, str, object, list (one or more)."""

    kinds: tuple[str, ...]
    required: bool = False
    nullable: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    choices: tuple[Any, ...] | None = None
    fields: dict[str, Field] | None = None  # an object with these keys
    open: bool = False  # an object that may hold keys besides `fields`
    values: Field | None = None  # an object of any keys whose values are all this
    items: Field | None = None  # a list whose items are all this
    note: str = ""

    def allowed(self) -> str:
        if self.choices is not None:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.kinds == ("int",) and self.low == 1 and not self.low_open:
            text = "a positive integer" + (f" (at most {_num(self.high)})" if self.high else "")
        elif self.kinds == ("int",) and self.low == 0 and not self.low_open:
            text = "an integer ≥ 0" + (f" (at most {_num(self.high)})" if self.high else "")
        elif self.kinds == ("number",) and self.low == 0 and self.low_open:
            text = ("a fraction in (0, 1]" if self.high == 1 else "a positive number"
                    + (f" (at most {_num(self.high)})" if self.high else ""))
        else:
            names = {"int": "an integer", "number": "a finite number", "bool": "true or false",
                     "str": "a string", "object": "a JSON object", "list": "a JSON list"}
            text = " or ".join(names[k] for k in self.kinds)
            if self.low is not None or self.high is not None:
                lo = "(" if self.low_open else "["
                text += (f" in {lo}{_num(self.low) if self.low is not None else '-inf'}, "
                         f"{_num(self.high) if self.high is not None else 'inf'}]")
        if self.nullable:
            text += " or null"
        return text + (f" ({self.note})" if self.note else "")

    def check(self, value: Any, origin: str, path: str, label: str = "") -> None:
        def bad() -> FileInputError:
            return _fail(origin, f"{label}field {path!r} = {_show(value)} must be "
                         f"{self.allowed()}")

        if value is None:
            if self.nullable:
                return
            raise bad()
        if not any(_is(value, k) for k in self.kinds):
            raise _fail(origin, f"{label}field {path!r} must be {self.allowed()}, not "
                        f"{_show(value)}")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and (self.low is not None and (value < self.low
                                                  or self.low_open and value == self.low)
                       or self.high is not None and value > self.high):
            raise bad()
        if self.choices is not None and value not in self.choices:
            raise bad()
        if isinstance(value, dict):
            if self.fields is not None:
                check_object(value, self.fields, origin, path, open_=self.open, label=label)
            if self.values is not None:
                for k, v in value.items():
                    self.values.check(v, origin, f"{path}.{k}", label)
        if isinstance(value, list) and self.items is not None:
            for i, v in enumerate(value):
                self.items.check(v, origin, f"{path}[{i}]", label)


def _num(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def _is(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    return isinstance(value, {"str": str, "object": dict, "list": list}[kind])


def check_object(data: Any, fields: dict[str, Field], origin: str, path: str = "",
                 open_: bool = False, label: str = "") -> None:
    """Check one JSON object against `fields`. Messages read "<file>: <label>field 'a.b' = v must
    be ..." (`label` names a list item, e.g. a case by its id)."""
    if not isinstance(data, dict):
        where = f"field {path!r}" if path else "the top level"
        raise _fail(origin, f"{label}{where} must be a JSON object, not {_json_type(data)}")
    for key, f in fields.items():
        p = f"{path}.{key}" if path else key
        if key not in data:
            if f.required:
                raise _fail(origin, f"{label}missing field {p!r} ({f.allowed()})")
            continue
        f.check(data[key], origin, p, label)
    if not open_:
        unknown = [k for k in data if k not in fields]
        if unknown:
            k = unknown[0]
            hint = did_you_mean(k, fields, n=1)
            raise _fail(origin, f"{label}unknown field {(f'{path}.{k}' if path else k)!r}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else "")
                        + "; known: " + ", ".join(fields))


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "true/false"
    return {dict: "an object", list: "a list", str: "a string", int: "a number",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


@dataclass(frozen=True)
class Schema:
    what: str  # how errors name the file kind
    fields: dict[str, Field] = field(default_factory=dict)
    open: bool = False
    top: str = "object"  # "object" or "list" (of objects with `fields`)

    def check(self, data: Any, origin: str) -> None:
        if self.top == "list":
            if not isinstance(data, list):
                raise _fail(origin, f"a {self.what} must be a JSON list of objects, "
                                     f"not {_json_type(data)}")
            for i, item in enumerate(data):
                ident = item.get("id") if isinstance(item, dict) else None
                label = f"item [{i}]" + (f" (id {ident!r})" if isinstance(ident, str) else "")
                check_object(item, self.fields, origin, "", self.open, label=label + ": ")
            return
        check_object(data, self.fields, origin, "", self.open)


def _int(low: int = 1, high: int | None = None, **kw: Any) -> Field:
    return Field(("int",), low=low, high=high, **kw)


def _pos(high: float | None = None, **kw: Any) -> Field:
    return Field(("number",), low=0, low_open=True, high=high, **kw)


_STR = Field(("str",), nullable=True)  # optional text
_FRACTION = Field(("number",), low=0, low_open=True, high=1)

# Model config.json: the sizes every reader uses, with bounds no real model comes near (the
# bounds keep the analysis's work bounded). Other keys are the model's own business.
_SIZE = _int(1, 2**24, nullable=True)
MODEL_CONFIG_FIELDS: dict[str, Field] = {
    "model_type": Field(("str",), nullable=True),
    **{k: _int(1, 10_000, nullable=True, note="layers")
       for k in ("num_hidden_layers", "n_layer", "num_layers")},
    **{k: _SIZE for k in ("hidden_size", "n_embd", "d_model", "intermediate_size", "n_inner",
                          "ffn_hidden_size", "moe_intermediate_size", "head_dim",
                          "vocab_size")},
    **{k: _int(1, 65_536, nullable=True)
       for k in ("num_attention_heads", "n_head", "num_key_value_heads")},
    **{k: _int(0, 65_536, nullable=True, note="experts")
       for k in ("num_local_experts", "num_experts", "n_routed_experts", "n_shared_experts",
                 "num_experts_per_tok", "moe_topk")},
    **{k: _int(1, 2**32, nullable=True)
       for k in ("max_position_embeddings", "n_positions", "seq_length")},
    **{k: Field(("bool",), nullable=True)
       for k in ("tie_word_embeddings", "attention_bias", "mlp_bias", "use_bias", "bias",
                 "parallel_attn", "new_decoder_architecture", "use_parallel_residual")},
    "rope_scaling": Field(("object",), nullable=True, open=True, fields={
        "factor": _pos(1024, nullable=True),
        "original_max_position_embeddings": _int(1, 2**32, nullable=True)}),
}
MODEL_ENTRY_FIELDS: dict[str, Field] = {
    "name": _STR, "display_name": _STR, "family": _STR, "source": _STR,
    "hf_repo": Field(("str",), nullable=True),
    "aliases": Field(("list",), items=_STR),
    "config": Field(("object",), required=True, fields=MODEL_CONFIG_FIELDS, open=True),
    "published_params": Field(("object",), nullable=True, open=True, fields={}),
}


class _ModelSchema(Schema):
    """A HF config.json, or a catalog-format entry {"name", "source", "config": {...}}."""

    def check(self, data: Any, origin: str) -> None:
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            check_object(data, MODEL_ENTRY_FIELDS, origin, "", open_=False)
        else:
            check_object(data, MODEL_CONFIG_FIELDS, origin, "", open_=True)


_DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4")
GPU_FIELDS: dict[str, Field] = {
    "name": Field(("str",), required=True),
    "display_name": _STR, "vendor": _STR, "architecture": _STR, "form_factor": _STR,
    "memory_note": _STR, "memory_type": _STR, "memory_stated": _STR, "pcie": _STR, "notes": _STR,
    "aliases": Field(("list",), items=_STR),
    "peak_tflops": Field(("object",), required=True, fields={
        d: _pos(1e6, nullable=True, note="dense TFLOP/s") for d in _DTYPES}),
    "memory": Field(("object",), required=True, fields={
        "value": _pos(1e6, required=True),
        "unit": Field(("str",), required=True, choices=("GB", "GiB", "TB", "TiB"))}),
    "memory_bytes": _int(1, 2**60, nullable=True),
    "memory_bandwidth_gb_s": _pos(1e7, required=True),
    "intra_node_link": Field(("object",), nullable=True, fields={
        "name": _STR, "bandwidth_gb_s": _pos(1e7, nullable=True), "direction": _STR}),
    "sm_count": _int(1, 100_000, nullable=True),
    "tensor_cores_per_sm": _int(1, 1024, nullable=True),
    "dense_fp16_flops_per_tensor_core_per_clock": _int(1, 1_000_000, nullable=True),
    "boost_clock_mhz": _pos(100_000, nullable=True),
    "tdp_w": _pos(100_000, nullable=True),
    # a power limit below the rated TDP: compute runs at the clock it allows
    "power_limit_w": _pos(100_000, nullable=True),
    # GPUs one NVLink domain connects (8 in an HGX/DGX node, 72 in a GB200 NVL72 rack)
    "nvlink_domain": _int(1, 100_000, nullable=True),
    # this SKU's own maximum achievable matmul throughput where it was measured apart from its
    # generation's reference part (MAMF, dense TFLOP/s, and the reduction depth of the best
    # shape): it replaces the generation's measured ceiling for this SKU
    "measured_matmul": Field(("object",), nullable=True, fields={
        d: Field(("object",), fields={"tflops": _pos(1e6, required=True),
                                      "depth": _pos(1e9, nullable=True)})
        for d in ("bf16", "fp8")}),
    "sources": Field(("object",), values=_STR),
}

EFFICIENCY_FIELDS: dict[str, Field] = {
    "matmul_ceiling": _FRACTION, "attention_efficiency": _FRACTION, "memory_ceiling": _FRACTION,
    "comm_efficiency": _FRACTION, "inter_node_efficiency": _FRACTION,
    "collective_latency_s": Field(("number",), low=0, high=1, note="seconds"),
    "kernel_overhead_s": Field(("number",), low=0, high=1, note="seconds"),
    "overlap_slowdown": Field(("number",), low=0, high=0.99,
                              note="the share of compute speed lost beside a collective"),
    "tile_m": _int(1, 4096), "tile_n": _int(1, 4096),
    "fp8_matmul_ceiling": _FRACTION, "attention_backward_ratio": _FRACTION,
    "fa2_attention_ratio": _FRACTION,
    "attention_half_seq": Field(("number",), low=0, high=1e9, note="tokens"),
    "attention_half_head_dim": Field(("number",), low=0, high=1e6, note="head dimensions"),
    "fa2_attention_half_head_dim": Field(("number",), low=0, high=1e6,
                                         note="head dimensions"),
    "matmul_half_k": Field(("number",), low=0, high=1e9, note="reduction elements"),
    "matmul_ceiling_k": Field(("number",), low=0, high=1e9, note="reduction elements"),
    "fp8_matmul_ceiling_k": Field(("number",), low=0, high=1e9, note="reduction elements"),
    "generation": _STR, "source": _STR, "gpu": _STR, "fitted_on": _STR, "notes": _STR,
}
# a fitted table scales a generation's measured factors by these fractions
_SCALE = Field(("object",), fields={
    k: Field(("number",), low=0.05, high=2.0, note="a multiplier of the measured factor")
    for k in ("matmul_ceiling", "fp8_matmul_ceiling", "attention_efficiency", "memory_ceiling",
              "comm_efficiency", "inter_node_efficiency")})
_GENERATION = Field(("object",), fields={
    "scale": _SCALE, "default": Field(("object",), fields=EFFICIENCY_FIELDS), "source": _STR,
    "bounds_hit": Field(("list",)), "cases": _int(0, 10**6)})
_WORKLOAD = Field(("object",), fields={
    "scale": _SCALE, "source": _STR, "bounds_hit": Field(("list",)), "cases": _int(0, 10**6),
    "default": Field(("object",), fields=EFFICIENCY_FIELDS),
    "generations": Field(("object",), values=_GENERATION),
    "accelerators": Field(("object",), values=Field(("object",), fields=EFFICIENCY_FIELDS)),
})


class _CalibrationSchema(Schema):
    """Factors for every workload at the top level, and/or {"training": …, "serving": …}
    sections (each a "default" and optional per-accelerator factors), as `llmsizer calibrate`
    writes them. Factors a file leaves out keep their packaged calibrated values."""

    def check(self, data: Any, origin: str) -> None:
        check_object(data, EFFICIENCY_FIELDS | {"training": _WORKLOAD, "serving": _WORKLOAD},
                     origin)


_MEASURED = Field(("object",), required=True, values=Field(("number", "str")))
_CASE_MODEL = Field(("object",), required=True, fields={
    "catalog": _STR, "config": Field(("object",), fields=MODEL_CONFIG_FIELDS, open=True)})
_CASE_COMMON: dict[str, Field] = {
    "id": Field(("str",), required=True), "source": Field(("str",), required=True),
    "model": _CASE_MODEL, "gpu": Field(("str",), required=True), "measured": _MEASURED,
    "notes": _STR, "tp": _int(1, 65_536, required=True), "pp": _int(1, 65_536, nullable=True),
    # the source family: cases from one paper, benchmark page or results round share it, and
    # leave-one-source-out validation holds a whole family out at once
    "family": _STR,
}
TRAINING_CASE_FIELDS: dict[str, Field] = _CASE_COMMON | {
    "gpus": _int(1, 2**20, required=True), "gpus_per_node": _int(1, 1024),
    "pp": _int(1, 65_536, required=True), "dp": _int(1, 2**20, required=True),
    "cp": _int(1, 65_536), "ep": _int(1, 65_536), "zero": _int(0, 3),
    "sequence_parallel": Field(("bool",)),
    "recompute": Field(("str",), choices=("none", "selective", "full")),
    "micro_batch": _int(1, 2**16, required=True), "global_batch": _int(1, 2**24, required=True),
    "seq": _int(1, 2**24, required=True), "schedule": _STR, "precision": _STR,
    "framework": _STR, "fp8_recipe": _STR,
    # the recipe's MoE dispatcher and expert all-to-all overlap, where the source states them
    "moe_dispatcher": Field(("str",), choices=("alltoall", "deepep", "hybridep")),
    "moe_a2a_overlap": Field(("bool",)),
    # the attention kernels the run used: fused (flash) or the unfused QK^T, softmax, dropout, AV
    # sequence that every run before FlashAttention (2022) executed
    "attention": Field(("str",), choices=("flash", "eager")),
    # what the run captured in CUDA graphs (op_costs.CUDA_GRAPHS), where its recipe says
    "cuda_graphs": Field(("str",), choices=("none", "attn", "moe_router", "attn,moe_router",
                                            "full")),
    # layers on the first and the last pipeline stage, where the source says so
    "stage_split": Field(("list",)),
}
INFERENCE_CASE_FIELDS: dict[str, Field] = _CASE_COMMON | {
    "framework": _STR, "dataset": _STR, "weights": _STR,
    "kv_dtype": Field(("str",), nullable=True),
    "prompt": _int(1, 2**24, nullable=True), "output": _int(1, 2**24, nullable=True),
    "batch": _int(1, 2**20, nullable=True), "concurrency": _int(1, 2**20, nullable=True),
    "data_parallel": _int(1, 2**20, nullable=True),
}

SCHEMAS: dict[str, Schema] = {
    "model": _ModelSchema("model config.json", open=True),
    "gpu": Schema("GPU file (the format of catalog/data/accelerators.json)", GPU_FIELDS),
    "calibration": _CalibrationSchema("calibration file (llmsizer calibrate)"),
    "training-cases": Schema("training cases file", TRAINING_CASE_FIELDS, top="list"),
    "inference-cases": Schema("inference cases file", INFERENCE_CASE_FIELDS, top="list"),
}

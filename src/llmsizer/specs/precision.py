"""Data types and their sizes."""

from __future__ import annotations

from llmsizer.errors import SpecError

BYTES_PER_ELEMENT: dict[str, float] = {
    "fp64": 8, "fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int4": 0.5,
    "fp4": 0.5,
}
ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16",
           "bfloat16": "bf16", "float8": "fp8", "e4m3": "fp8", "e5m2": "fp8"}


def dtype_bytes(dtype: str, field: str = "dtype") -> float:
    """Bytes per element of `dtype` (int4: 0.5)."""
    key = ALIASES.get(dtype.lower(), dtype.lower())
    if key not in BYTES_PER_ELEMENT:
        raise SpecError(field, dtype, "one of " + ", ".join(BYTES_PER_ELEMENT))
    return BYTES_PER_ELEMENT[key]

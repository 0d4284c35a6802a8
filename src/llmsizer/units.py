"""Parsing and formatting of counts, bytes, FLOPs and seconds.

Bytes are bytes everywhere inside llmsizer; conversion happens only when printing, and the
printed unit says whether it is binary (GiB = 2**30 bytes) or decimal (GB = 10**9 bytes).
"""

from __future__ import annotations

import math
import re

from llmsizer.errors import SpecError

_DECIMAL = {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "b": 1e9, "B": 1e9, "g": 1e9, "G": 1e9,
            "t": 1e12, "T": 1e12, "p": 1e15, "P": 1e15}
_BYTE_UNITS = {
    "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "pb": 1e15,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"


def parse_count(text: str | float | int, field: str = "value") -> float:
    """Parse "15T", "6.4M", "1.2e3", "4096" into a number (decimal suffixes k/M/B|G/T/P)."""
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip().replace("_", "").replace(",", "")
    m = re.fullmatch(_NUMBER + r"\s*([kKmMbBgGtTpP]?)", s)
    if not m:
        raise SpecError(field, text, "a number with an optional suffix k, M, B/G, T or P (e.g. 15T)")
    value = float(m.group(1)) * _DECIMAL[m.group(2)]
    if not math.isfinite(value):
        raise SpecError(field, text, "a finite number")
    return value


def count_readings(text: str, field: str = "value") -> tuple[float, float | None]:
    """(decimal, binary) readings of a count: "16M" -> (16·10^6, 16·2^20); the binary reading is
    None without a k/M/G/T suffix. Papers quote batch sizes in tokens as binary millions (a 4M
    batch of 2,048-token sequences is 2,048 sequences = 4·2^20 tokens)."""
    decimal = parse_count(text, field)
    s = str(text).strip().replace("_", "").replace(",", "")
    suffix = s[-1:] if s[-1:].isalpha() else ""
    power = {"k": 10, "m": 20, "g": 30, "b": 30, "t": 40, "p": 50}.get(suffix.lower())
    if power is None:
        return decimal, None
    return decimal, float(s[:-1].strip()) * 2**power


_LENGTH_SUFFIX = {"": 1, "k": 2**10, "K": 2**10, "m": 2**20, "M": 2**20}


def parse_length(text: str | int, field: str = "length") -> int:
    """A length in tokens: "4096", "4k" = 4,096, "128k" = 131,072, "1M" = 1,048,576 — binary
    suffixes, as context lengths are named (Llama 3.1's "128K" is 131,072 positions)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    s = str(text).strip().replace("_", "").replace(",", "")
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([kKmM]?)", s)
    if not m:
        raise SpecError(field, text, "a whole number of tokens, optionally with k (×1,024) or M "
                        "(×1,048,576), e.g. 4096, 4k, 128k")
    value = float(m.group(1)) * _LENGTH_SUFFIX[m.group(2)]
    if value != int(value):
        raise SpecError(field, text, "a whole number of tokens (4.5k = 4,608 is; 0.1k is not)")
    return int(value)


def parse_bytes(text: str | float | int, field: str = "size") -> float:
    """Parse "80GiB", "80 GB", "512MiB", "1e9" (plain numbers are bytes)."""
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip().replace("_", "").replace(",", "")
    m = re.fullmatch(_NUMBER + r"\s*([A-Za-z]*)", s)
    unit = m.group(2).lower() if m else None
    if not m or unit not in _BYTE_UNITS and unit != "":
        raise SpecError(field, text, "a size such as 80GiB, 80GB, 512MiB or a number of bytes")
    return float(m.group(1)) * (_BYTE_UNITS[unit] if unit else 1)


def format_count(n: float, digits: int = 3) -> str:
    """6738415616 -> "6.74B" (decimal suffixes, as parameter counts are quoted). The suffix is
    chosen after rounding, so 999,885,952 is "1B", not "1e+03M"."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(float(f"{n:.{digits}g}")) >= scale:
            return f"{n / scale:.{digits}g}{suffix}"
    return f"{n:.{digits}g}"


def format_bytes(n: float) -> str:
    """Bytes in binary units with the decimal value beside: "12.55 GiB (13.48 GB)"."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit, scale, dunit, dscale in (
        ("TiB", 2**40, "TB", 1e12),
        ("GiB", 2**30, "GB", 1e9),
        ("MiB", 2**20, "MB", 1e6),
        ("KiB", 2**10, "kB", 1e3),
    ):
        if n >= scale:
            return f"{n / scale:.2f} {unit} ({n / dscale:.2f} {dunit})"
    raise AssertionError("unreachable")


def format_flops(n: float) -> str:
    """FLOPs (a count, not a rate): 1.2e18 -> "1.20 EFLOP"."""
    if n == 0:
        return "0 FLOP"
    exp = min(int(math.log10(abs(n)) // 3), 6)
    prefix = ["", "k", "M", "G", "T", "P", "E"][max(exp, 0)]
    return f"{n / 10 ** (3 * max(exp, 0)):.2f} {prefix}FLOP"


def format_seconds(s: float) -> str:
    """Seconds in the most readable unit: 0.0123 -> "12.3 ms", 90061 -> "1.04 days"."""
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.2f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.2f} days"

"""Numbers that carry their own derivation.

A `Quantity` is a value with its unit, the symbolic formula it comes from, the same formula with
the values substituted, the source of the formula, and the quantities it was built from. Analyses
return trees of them; `render` prints a tree for `--explain`, `to_json` serialises one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Quantity:
    name: str
    value: float
    unit: str = ""
    formula: str = ""
    substituted: str = ""
    source: str = ""
    children: tuple[Quantity, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "value": self.value, "unit": self.unit}
        if self.formula:
            out["formula"] = self.formula
        if self.substituted:
            out["substituted"] = self.substituted
        if self.source:
            out["source"] = self.source
        if self.children:
            out["children"] = [c.to_json() for c in self.children]
        return out


def render(
    q: Quantity,
    fmt: Callable[[Quantity], str] | None = None,
    indent: int = 0,
    max_depth: int | None = None,
) -> str:
    """Indented text: `name = formula = substituted = value  [source]`, children below."""
    show = fmt or _default_format
    pad = "  " * indent
    parts = [f"{pad}{q.name}"]
    if q.formula:
        parts.append(q.formula)
    if q.substituted and q.substituted != q.formula:
        parts.append(q.substituted)
    parts.append(show(q))
    line = " = ".join(parts)
    if q.source:
        line += f"   [{q.source}]"
    lines = [line]
    if max_depth is None or indent < max_depth:
        for child in q.children:
            lines.append(render(child, fmt, indent + 1, max_depth))
    return "\n".join(lines)


def _default_format(q: Quantity) -> str:
    v = q.value
    text = f"{int(v):,}" if float(v).is_integer() else f"{v:.6g}"
    return f"{text} {q.unit}".rstrip()


def total(name: str, unit: str, parts: list[Quantity], source: str = "") -> Quantity:
    """A Quantity that is the sum of its children."""
    value = sum(p.value for p in parts)
    return Quantity(
        name=name,
        value=value,
        unit=unit,
        formula=" + ".join(p.name for p in parts) if len(parts) <= 6 else f"Σ {len(parts)} terms",
        substituted=" + ".join(_num(p.value) for p in parts) if len(parts) <= 6 else "",
        source=source,
        children=tuple(parts),
    )


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:.6g}"

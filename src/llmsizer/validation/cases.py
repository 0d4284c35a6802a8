"""Validation cases: loading, checking and the declared fitting/held-out split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from llmsizer.errors import LlmsizerError


class CaseError(LlmsizerError):
    """A malformed case file: names the file, the case and the field."""


@dataclass(frozen=True)
class Case:
    kind: str  # "training" | "inference"
    id: str
    source: str
    data: dict[str, Any]
    origin: str

    @property
    def split(self) -> str:
        return split_of(self.id)


def split_of(case_id: str) -> str:
    """The declared split: a case is held out when the first byte of sha1(id) is odd.

    Fixed by the id alone, so no result can move a case between fitting and held-out.
    """
    return "holdout" if hashlib.sha1(case_id.encode()).digest()[0] % 2 else "fit"


def _default_path(kind: str) -> Path:
    return Path(str(resources.files("llmsizer.validation").joinpath("cases", f"{kind}.json")))


def load_cases(kind: str, path: str | Path | None = None) -> list[Case]:
    """The cases of a file, checked against llmsizer.files' schema for the kind."""
    from llmsizer.files import read_json

    path = Path(path) if path is not None else _default_path(kind)
    if kind not in ("training", "inference"):
        raise CaseError(f"cases of kind {kind!r}: expected training or inference")
    data = read_json(path, f"{kind}-cases", error=CaseError)
    out, seen = [], set()
    for n, raw in enumerate(data):
        where = f"{path}: item [{n}] (id {raw['id']!r})"
        model = raw["model"]
        if len({"catalog", "config"} & set(model)) != 1:
            raise CaseError(f"{where}: field 'model' must be {{\"catalog\": name}} or "
                            "{\"config\": {...}}")
        if not raw["measured"]:
            raise CaseError(f"{where}: field 'measured' must be a non-empty object")
        if raw["id"] in seen:
            raise CaseError(f"{where}: duplicate id")
        seen.add(raw["id"])
        out.append(Case(kind, raw["id"], raw["source"], raw, str(path)))
    return out

"""Validation cases: loading, checking and the declared fitting/held-out split."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from llmsizer.errors import LlmsizerError

TRAINING_FIELDS = ("id", "source", "model", "gpu", "gpus", "tp", "pp", "dp", "seq",
                   "micro_batch", "global_batch", "measured")
INFERENCE_FIELDS = ("id", "source", "model", "gpu", "tp", "measured")


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
    path = Path(path) if path is not None else _default_path(kind)
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise CaseError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise CaseError(f"{path}: broken JSON at line {e.lineno} column {e.colno}: {e.msg}") \
            from None
    if not isinstance(data, list):
        raise CaseError(f"{path}: expected a JSON list of cases")
    required = TRAINING_FIELDS if kind == "training" else INFERENCE_FIELDS
    out, seen = [], set()
    for n, raw in enumerate(data):
        where = f"{path}: case {raw.get('id', f'#{n}') if isinstance(raw, dict) else f'#{n}'}"
        if not isinstance(raw, dict):
            raise CaseError(f"{where}: expected a JSON object")
        for f in required:
            if raw.get(f) is None:
                raise CaseError(f"{where}: missing field {f!r}")
        if not isinstance(raw["measured"], dict) or not raw["measured"]:
            raise CaseError(f"{where}: field 'measured' must be a non-empty object")
        model = raw["model"]
        if not isinstance(model, dict) or not ({"catalog", "config"} & set(model)):
            raise CaseError(f"{where}: field 'model' must be {{\"catalog\": name}} or "
                            "{\"config\": {...}}")
        for f in ("gpus", "tp", "pp", "dp", "seq", "micro_batch", "global_batch"):
            v = raw.get(f)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise CaseError(f"{where}: field {f!r} = {v!r} must be a positive integer")
        if raw["id"] in seen:
            raise CaseError(f"{where}: duplicate id")
        seen.add(raw["id"])
        out.append(Case(kind, raw["id"], raw["source"], raw, str(path)))
    return out

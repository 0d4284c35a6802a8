"""Errors that reach the user as one line: the field, the value, and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LlmsizerError(Exception):
    """Base class: a problem with the user's input, reported in one line (exit code 2)."""


class SpecError(LlmsizerError, ValueError):
    """A value that is not allowed for a field."""

    def __init__(self, field: str, value: object, allowed: str, hint: str | None = None):
        self.field = field
        self.value = value
        self.allowed = allowed
        self.hint = hint
        message = f"{field}={value!r} is not allowed: {allowed}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class ImpossibleResultError(Exception):
    """A computed result that breaks a physical invariant (utilisation over 100 %, a negative or
    non-finite time or size): a bug in llmsizer, never the user's input. Exit status 4."""


class UnknownNameError(LlmsizerError, KeyError):
    """A catalog name that matches nothing; suggests the closest names."""

    def __init__(self, kind: str, name: str, known: Iterable[str], list_command: str):
        self.kind = kind
        self.name = name
        self.suggestions = did_you_mean(name, known)
        message = f"unknown {kind} {name!r}"
        if self.suggestions:
            message += "; did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        message += f" (`{list_command}` lists them; a path to a JSON file is accepted too)"
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def did_you_mean(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Closest known names to `name` (case-insensitive), best first."""
    known = list(known)
    lowered = {k.lower(): k for k in known}
    key = name.lower()
    matches = difflib.get_close_matches(key, list(lowered), n=n, cutoff=0.6)
    if not matches:
        # A prefix or substring is a strong hint too ("llama-2" -> "llama-2-7b").
        matches = [k for k in lowered if key and (k.startswith(key) or key in k)][:n]
    return [lowered[m] for m in matches]

"""Answers of pure analysis functions kept for the server's lifetime, used only while the server
runs a command.

The page asks the same questions again and again with one input changed. `infer --sweep` evaluates
`serve()` at batch 1, 2, 4, … up to the concurrency limit and searches the batch at which decode
turns compute-bound: ten to twenty roofline passes, none of which depends on the batch the user
typed, so after the first answer for a model, GPU and workload only the requested batch is new.
The functions listed in MEMOIZED are pure (their result is a function of their arguments, all
frozen dataclasses and numbers), so a remembered result is the result; arguments that cannot be
hashed are passed through. The command line never sees the memo: the wrappers call the function
itself unless `active()` is set, which the API does around each command it runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

# (module, function): pure functions the page's repeated questions call with repeated arguments
MEMOIZED = (("llmsizer.analysis.inference", "serve"),
            ("llmsizer.analysis.inference", "compute_bound_batch"))
MAX_ENTRIES = 2048  # per function; a ServingResult is a few hundred op costs

_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("llmsizer_web_memo", default=False)
_LOCK = threading.Lock()
_WRAPPERS: dict[tuple[str, str], Callable[..., Any]] = {}


def _memoized(function: Callable[..., Any]) -> Callable[..., Any]:
    cached = functools.lru_cache(maxsize=MAX_ENTRIES)(function)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _ACTIVE.get():
            try:
                hash((args, tuple(kwargs.items())))
            except TypeError:
                return function(*args, **kwargs)
            return cached(*args, **kwargs)
        return function(*args, **kwargs)

    wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
    wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Put the memoizing wrappers in place of MEMOIZED (once per process)."""
    with _LOCK:
        for module_name, name in MEMOIZED:
            if (module_name, name) in _WRAPPERS:
                continue
            module = importlib.import_module(module_name)
            wrapper = _memoized(getattr(module, name))
            setattr(module, name, wrapper)
            _WRAPPERS[(module_name, name)] = wrapper


@contextlib.contextmanager
def active() -> Iterator[None]:
    """Inside this block (one command run by the API, in its thread), the memo answers."""
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)

"""Measure on real hardware (the `measure` extra: torch, transformers).

`llmsizer measure kernels` times the model's GEMMs, fused attention, a memory stream and the
collectives on this machine's device and writes a calibration file (and, on a CPU, a device file
since no datasheet peak exists); `measure train` and `measure infer` run real PyTorch steps of the
model built from its config (random weights, nothing downloaded) and print them beside llmsizer's
prediction for the same layout. Nothing here is imported by the analytical core: torch is loaded
only when a `measure` command runs.
"""

from __future__ import annotations

from typing import Any

from llmsizer.errors import LlmsizerError

INSTALL_HINT = "pip install torch==2.13.0 && pip install 'llmsizer[measure]'"


class MeasureError(LlmsizerError):
    """A measurement that cannot run here (no torch, no CUDA, a backend missing): one line."""


def require_torch() -> Any:
    """torch, or a one-line error saying how to install it (the core never needs it)."""
    try:
        import torch
    except ImportError:
        raise MeasureError(f"llmsizer measure needs torch: {INSTALL_HINT}") from None
    return torch


def require_transformers() -> Any:
    """transformers (to build the model from its config), or a one-line install hint."""
    try:
        import transformers
    except ImportError:
        raise MeasureError(f"llmsizer measure train/infer needs transformers: {INSTALL_HINT}"
                           ) from None
    return transformers

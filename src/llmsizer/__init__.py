"""llmsizer: exact, explained and verified quantitative analysis of transformer models.

The public API::

    from llmsizer import get_model, get_accelerator, count_params
    spec = get_model("llama-2-7b")
    counts = count_params(spec)
    counts.total            # 6738415616
"""

from llmsizer.analysis.params import ParamCounts, count_params
from llmsizer.catalog import get_accelerator, get_model, list_accelerators, list_models
from llmsizer.errors import LlmsizerError, SpecError, UnknownNameError
from llmsizer.specs.hardware import Accelerator
from llmsizer.specs.model import ModelSpec, MoESpec

__all__ = [
    "Accelerator",
    "LlmsizerError",
    "ModelSpec",
    "MoESpec",
    "ParamCounts",
    "SpecError",
    "UnknownNameError",
    "count_params",
    "get_accelerator",
    "get_model",
    "list_accelerators",
    "list_models",
]

__version__ = "0.1.0"

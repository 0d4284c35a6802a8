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


# ---------------------------------------------------------------------------------------------
# Training recipes: bytes per parameter of each model state
# ---------------------------------------------------------------------------------------------

from dataclasses import dataclass  # noqa: E402


@dataclass(frozen=True)
class TrainingPrecision:
    """Bytes per parameter of each model state, before any sharding.

    `master_bytes` is the fp32 copy of the weights that mixed precision keeps for the update;
    the ZeRO paper counts it with the optimizer states (K = 12 for Adam = 4 master + 4 + 4).
    """

    name: str
    compute_dtype: str  # the dtype matrix products run in (peak FLOP/s are read for it)
    weight_bytes: float
    gradient_bytes: float
    master_bytes: float
    optimizer_state_dtype_bytes: float  # bytes per optimizer moment element
    source: str


RECIPES: dict[str, TrainingPrecision] = {
    "fp32": TrainingPrecision("fp32", "fp32", 4, 4, 0, 4, "plain fp32 training"),
    "mixed": TrainingPrecision(
        "mixed", "bf16", 2, 2, 4, 4,
        "Rajbhandari et al. 2020 (ZeRO) sec. 3.1: 2Ψ + 2Ψ + KΨ with K = 12 for mixed-precision Adam"),
    "mixed-fp16": TrainingPrecision(
        "mixed-fp16", "fp16", 2, 2, 4, 4, "Micikevicius et al. 2018; ZeRO sec. 3.1 (16Ψ)"),
    "mixed-fp32-grads": TrainingPrecision(
        "mixed-fp32-grads", "bf16", 2, 2 + 4, 4, 4,
        "seed 003 sec. 2.15 (about 20 bytes): bf16 gradients plus an fp32 accumulation buffer "
        "(Megatron-LM --accumulate-allreduce-grads-in-fp32)"),
    "bf16": TrainingPrecision("bf16", "bf16", 2, 2, 0, 2,
                              "pure bf16: weights, gradients and optimizer moments in bf16"),
}
RECIPE_ALIASES = {"bf16-mixed": "mixed", "fp16-mixed": "mixed-fp16", "amp": "mixed",
                  "fp32-grads": "mixed-fp32-grads", "pure-bf16": "bf16", "float32": "fp32"}


@dataclass(frozen=True)
class Optimizer:
    name: str
    moments: int  # state tensors per parameter
    moment_bytes: float | None  # None: the recipe's optimizer_state_dtype_bytes
    source: str

    def state_bytes(self, recipe: TrainingPrecision) -> float:
        per = recipe.optimizer_state_dtype_bytes if self.moment_bytes is None else self.moment_bytes
        return self.moments * per


OPTIMIZERS: dict[str, Optimizer] = {
    "adam": Optimizer("adam", 2, None, "Kingma & Ba 2015: first and second moments"),
    "adamw": Optimizer("adamw", 2, None, "Loshchilov & Hutter 2019: as Adam"),
    # bitsandbytes blockwise 8-bit Adam: 1 byte per moment plus an fp32 absmax per 2048-element
    # block (Dettmers et al. 2022, 8-bit Optimizers via Block-wise Quantization).
    "adam-8bit": Optimizer("adam-8bit", 2, 1 + 4 / 2048, "Dettmers et al. 2022 (block size 2048)"),
    "sgd": Optimizer("sgd", 0, None, "plain SGD keeps no state"),
    "sgd-momentum": Optimizer("sgd-momentum", 1, None, "SGD with momentum: one buffer"),
}


def training_precision(name: str) -> TrainingPrecision:
    key = RECIPE_ALIASES.get(name.lower(), name.lower())
    if key not in RECIPES:
        raise SpecError("precision", name, "one of " + ", ".join(RECIPES))
    return RECIPES[key]


def optimizer(name: str) -> Optimizer:
    key = name.lower().replace("_", "-")
    key = {"adam8bit": "adam-8bit", "adamw-8bit": "adam-8bit", "momentum": "sgd-momentum"}.get(
        key, key)
    if key not in OPTIMIZERS:
        raise SpecError("optimizer", name, "one of " + ", ".join(OPTIMIZERS))
    return OPTIMIZERS[key]

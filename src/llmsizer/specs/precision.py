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
    "fp8": TrainingPrecision(
        "fp8", "fp8", 2, 2, 4, 4,
        "FP8 matrix products (Transformer Engine) with bf16 weights and gradients, fp32 master "
        "weights and Adam moments; FP8 weight copies are transient"),
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
    # Paged optimizers (bitsandbytes PagedAdamW, PagedAdamW8bit): the same states in CUDA unified
    # memory, evicted to host memory page by page when the device runs short (QLoRA, Dettmers et
    # al. 2023, sec. 3): device bytes as unpaged while they fit, spikes absorbed by the host.
    "paged-adam": Optimizer("paged-adam", 2, None, "bitsandbytes PagedAdamW (QLoRA sec. 3)"),
    "paged-adam-8bit": Optimizer("paged-adam-8bit", 2, 1 + 4 / 2048,
                                 "bitsandbytes PagedAdamW8bit (QLoRA sec. 3; block size 2048)"),
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
    key = {"adam8bit": "adam-8bit", "adamw-8bit": "adam-8bit", "adamw8bit": "adam-8bit",
           "momentum": "sgd-momentum", "paged-adamw": "paged-adam",
           "paged-adamw-8bit": "paged-adam-8bit", "paged-adamw8bit": "paged-adam-8bit",
           "paged-adam8bit": "paged-adam-8bit"}.get(key, key)
    if key not in OPTIMIZERS:
        raise SpecError("optimizer", name, "one of " + ", ".join(OPTIMIZERS))
    return OPTIMIZERS[key]


# ---------------------------------------------------------------------------------------------
# Serving: weight formats (with their scales) and KV-cache dtypes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightFormat:
    """Storage of the layers' linear weights. Embeddings, lm_head and norms stay in 16-bit, as
    GPTQ/AWQ checkpoints and vLLM's quantized loaders keep them."""

    name: str
    bits: float
    group_size: int | None  # elements sharing one scale (None: per tensor or per channel)
    scale_bytes: float  # per group: scale (+ zero point)
    compute_dtype: str  # what the matrix product runs in on the device
    source: str

    def bytes_per_param(self) -> float:
        extra = self.scale_bytes / self.group_size if self.group_size else 0.0
        return self.bits / 8 + extra


WEIGHT_FORMATS: dict[str, WeightFormat] = {
    "fp32": WeightFormat("fp32", 32, None, 0, "fp32", "plain"),
    "bf16": WeightFormat("bf16", 16, None, 0, "bf16", "plain"),
    "fp16": WeightFormat("fp16", 16, None, 0, "fp16", "plain"),
    # FP8 (e4m3) with one scale per tensor: negligible scale bytes.
    "fp8": WeightFormat("fp8", 8, None, 0, "fp8", "FP8 e4m3, per-tensor scale (vLLM fp8)"),
    # INT8 weight-only (per output channel fp16 scale, group = a row of the matrix): ~1 byte.
    "int8": WeightFormat("int8", 8, None, 0, "bf16",
                         "INT8 weight-only, per-channel scales (LLM.int8 / SmoothQuant W8)"),
    # INT4 group-wise (GPTQ / AWQ): an fp16 scale and a 4-bit zero point per 128 weights.
    "int4": WeightFormat("int4", 4, 128, 2 + 0.5, "bf16",
                         "GPTQ (Frantar et al. 2023) / AWQ (Lin et al. 2024), group size 128"),
}


def weight_format(name: str) -> WeightFormat:
    key = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "w8": "int8",
           "w4": "int4", "awq": "int4", "gptq": "int4"}.get(name.lower(), name.lower())
    if key not in WEIGHT_FORMATS:
        raise SpecError("weights", name, "one of " + ", ".join(WEIGHT_FORMATS))
    return WEIGHT_FORMATS[key]


KV_DTYPES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


def kv_dtype_bytes(name: str) -> float:
    key = {"float16": "fp16", "bfloat16": "bf16", "auto": "bf16", "fp8_e4m3": "fp8",
           "fp8_e5m2": "fp8"}.get(name.lower(), name.lower())
    if key not in KV_DTYPES:
        raise SpecError("kv-dtype", name, "one of " + ", ".join(KV_DTYPES))
    return KV_DTYPES[key]


# ---------------------------------------------------------------------------------------------
# Frozen base weights of fine-tuning: bitsandbytes storage
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrozenFormat:
    """How a frozen linear weight is stored while adapters train.

    nf4/fp4 (bitsandbytes Params4bit; Dettmers et al. 2023, QLoRA): two 4-bit codes per byte,
    one absmax per `blocksize` = 64 weights (fp32), and with double quantization those absmax
    values, minus their mean, quantized again to 8 bits in blocks of 256 with an fp32 absmax
    per block and the fp32 mean (bitsandbytes/functional.py, quantize_4bit with
    compress_statistics=True, and quantize_blockwise(absmax, blocksize=256)); each tensor's
    QuantState also keeps its 16-entry fp32 code table. int8 (LLM.int8, Dettmers et al. 2022):
    one int8 per weight and an fp32 absmax per output row (bitsandbytes Int8Params CB/SCB).
    """

    name: str
    bits: int
    blocksize: int | None = None  # 4-bit: weights per absmax
    double_quant: bool = False
    source: str = ""

    def tensor_bytes(self, rows: int, cols: int) -> int:
        """Bytes one (rows × cols) weight takes on the device, scales included."""
        n = rows * cols
        if self.bits >= 16:
            return n * self.bits // 8
        if self.bits == 8:
            return n + 4 * rows  # CB int8 + SCB fp32 per row
        assert self.blocksize is not None
        blocks = -(-n // self.blocksize)
        packed = (n + 1) // 2
        code = 16 * 4  # the NF4/FP4 code table (get_4bit_type), fp32, per QuantState
        if not self.double_quant:
            return packed + 4 * blocks + code
        nested = -(-blocks // 256)
        return packed + blocks + 4 * nested + 4 + code  # uint8 absmax, fp32 nested absmax, mean


FROZEN_FORMATS: dict[str, FrozenFormat] = {
    "bf16": FrozenFormat("bf16", 16, source="plain"),
    "fp16": FrozenFormat("fp16", 16, source="plain"),
    "fp32": FrozenFormat("fp32", 32, source="plain"),
    "int8": FrozenFormat("int8", 8, source="bitsandbytes LLM.int8 (load_in_8bit)"),
    "nf4": FrozenFormat("nf4", 4, 64, True, "bitsandbytes NF4, blocksize 64, double quant"),
    "fp4": FrozenFormat("fp4", 4, 64, True, "bitsandbytes FP4, blocksize 64, double quant"),
}
# The 256-entry fp32 dynamic map that every double-quantized absmax shares (one per device:
# bitsandbytes functional.quantize_blockwise caches name2qmap["dynamic"]).
DOUBLE_QUANT_SHARED_BYTES = 256 * 4


def frozen_format(name: str, double_quant: bool = True) -> FrozenFormat:
    key = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "8bit": "int8",
           "4bit": "nf4"}.get(name.lower(), name.lower())
    if key not in FROZEN_FORMATS:
        raise SpecError("base_weights", name, "one of " + ", ".join(FROZEN_FORMATS))
    f = FROZEN_FORMATS[key]
    if f.bits == 4 and not double_quant:
        from dataclasses import replace

        f = replace(f, double_quant=False, source=f.source.replace("double quant",
                                                                   "no double quant"))
    return f

"""How a training run is laid out on devices: parallel sizes, ZeRO, offload, recomputation,
batching and pipeline schedule. Validated when built; errors name the setting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmsizer.errors import SpecError

Schedule = Literal["gpipe", "1f1b", "interleaved"]
SCHEDULES = ("gpipe", "1f1b", "interleaved")
RECOMPUTE = ("none", "selective", "full")
OFFLOAD = ("optimizer", "params")
ZERO_FSDP_NAMES = {"no_shard": 0, "shard_grad_op": 2, "full_shard": 3, "hybrid_shard": 3}


@dataclass(frozen=True)
class Parallelism:
    dp: int = 1
    tp: int = 1
    pp: int = 1
    cp: int = 1
    ep: int = 1  # carved out of dp·cp, as in Megatron-LM
    sequence_parallel: bool = False
    zero: int = 0  # 0..3 over the data-parallel group (FSDP: NO_SHARD 0, SHARD_GRAD_OP 2, FULL 3)
    offload: frozenset[str] = frozenset()  # subset of {"optimizer", "params"}
    offload_device: str = "cpu"  # "cpu" | "nvme"
    recompute: str = "none"
    micro_batch: int = 1
    grad_accum: int = 1  # micro-batches per step per data-parallel rank
    schedule: Schedule = "1f1b"
    virtual_stages: int = 1  # model chunks per pipeline rank (interleaved 1F1B)
    # layers on the first and the last pipeline stage, the rest spread over the middle ones
    # (Megatron-LM --decoder-first/last-pipeline-num-layers); None: as even as possible
    stage_split: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("dp", "tp", "pp", "cp", "ep", "micro_batch", "grad_accum", "virtual_stages"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SpecError(name, v, "a positive integer")
        if self.zero not in (0, 1, 2, 3):
            raise SpecError("zero", self.zero, "0, 1, 2 or 3")
        # ZeRO on one data-parallel rank shards nothing, but it is how DeepSpeed runs
        # ZeRO-Offload on a single GPU (Ren et al. 2021): accepted.
        bad = set(self.offload) - set(OFFLOAD)
        if bad:
            raise SpecError("offload", sorted(bad)[0], "optimizer or params")
        if "optimizer" in self.offload and self.zero == 0:
            raise SpecError("offload", "optimizer", "used with ZeRO stage 1, 2 or 3 (--zero)")
        if "params" in self.offload and self.zero != 3:
            raise SpecError("offload", "params", "used with ZeRO stage 3 (--zero 3)")
        if self.offload_device not in ("cpu", "nvme"):
            raise SpecError("offload_device", self.offload_device, "cpu or nvme")
        if self.recompute not in RECOMPUTE:
            raise SpecError("recompute", self.recompute, "one of " + ", ".join(RECOMPUTE))
        if self.schedule not in SCHEDULES:
            raise SpecError("schedule", self.schedule, "gpipe, 1f1b or interleaved:V")
        if self.sequence_parallel and self.tp == 1:
            raise SpecError("sequence_parallel", True, "used with tp > 1")
        if self.schedule == "interleaved" and (self.pp == 1 or self.virtual_stages < 2):
            raise SpecError("schedule", f"interleaved:{self.virtual_stages}",
                            "interleaving needs pp > 1 and V >= 2 model chunks per rank")
        if self.schedule != "interleaved" and self.virtual_stages != 1:
            raise SpecError("virtual_stages", self.virtual_stages, "1 unless schedule is interleaved")
        if self.stage_split is not None and (self.pp == 1 or len(self.stage_split) != 2):
            raise SpecError("first-stage-layers", self.stage_split, "used with --pp 2 or more")
        if (self.dp * self.cp) % self.ep:
            raise SpecError("ep", self.ep, f"a divisor of dp·cp ({self.dp * self.cp})")

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step: micro_batch · dp · grad_accum (seed 004)."""
        return self.micro_batch * self.dp * self.grad_accum

    @property
    def data_shard_group(self) -> int:
        """Ranks a dense parameter's optimizer state is sharded over (dp·cp, Megatron-LM)."""
        return self.dp * self.cp

    @property
    def expert_shard_group(self) -> int:
        return self.dp * self.cp // self.ep


def parse_schedule(text: str) -> tuple[Schedule, int]:
    """"1f1b" -> ("1f1b", 1); "interleaved:4" -> ("interleaved", 4)."""
    name, _, v = text.partition(":")
    name = name.lower()
    if name not in SCHEDULES or (v and name != "interleaved"):
        raise SpecError("schedule", text, "gpipe, 1f1b or interleaved:V (V model chunks per rank)")
    if name == "interleaved":
        if not v.isdigit() or int(v) < 2:
            raise SpecError("schedule", text, "interleaved:V with an integer V >= 2")
        return "interleaved", int(v)
    return name, 1  # type: ignore[return-value]

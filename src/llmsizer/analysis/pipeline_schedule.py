"""A pipeline schedule played out in time: which stage runs which micro-batch's forward or
backward pass when, for GPipe, 1F1B and interleaved 1F1B.

Each device runs its passes in the order its schedule fixes, and a pass starts when the device is
free and the passes it needs have ended:
  forward of micro-batch i on virtual stage k   needs the forward of i on stage k-1;
  backward of i on virtual stage k              needs the backward of i on stage k+1 (the last
                                                stage: its own forward of i).
With V model chunks per device (interleaved), virtual stage k lives on device k mod pp as that
device's chunk k div pp (Narayanan et al. 2021, "Efficient Large-Scale Language Model Training
on GPU Clusters Using Megatron-LM", sec. 2.2.2, fig. 4). Hand-offs between stages are taken as
instantaneous. The idle time that results is the pipeline bubble: (pp-1)/m of the ideal time for
GPipe and 1F1B with equal stages, (pp-1)/(V·m) interleaved (ibid., sec. 2.2.1-2.2.2); the tests
check that the simulation reproduces those closed forms rather than assuming them.

The per-device orders:
  GPipe (Huang et al. 2019): every forward, then every backward.
  1F1B (PipeDream-Flush, Narayanan et al. 2021 fig. 4 top): pp-s-1 warm-up forwards on stage s,
      then one forward and one backward in turn, then the remaining backwards.
  interleaved (Megatron-LM's schedule, ibid. fig. 4 bottom): micro-batches in groups of pp, each
      group run through chunk 0, then chunk 1, …; (pp-s-1)·2 + (V-1)·pp warm-up forwards, then
      1F1B over (micro-batch, chunk) pairs, backwards visiting chunks last to first. Like
      Megatron-LM, it needs the number of micro-batches to be a multiple of pp.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Schedule = Literal["gpipe", "1f1b", "interleaved"]
Pass = tuple[str, int, int]  # ("F" or "B", micro-batch, chunk)


@dataclass(frozen=True)
class PipelineEvent:
    """One forward or backward pass of one micro-batch through one chunk of one stage."""

    stage: int  # the device's pipeline rank, 0 = first
    micro_batch: int
    chunk: int  # the model chunk on that device (0 unless interleaved)
    kind: str  # "F" forward, "B" backward
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Timeline:
    events: tuple[PipelineEvent, ...]
    pp: int
    micro_batches: int
    virtual_stages: int

    @property
    def makespan_s(self) -> float:
        return max(e.end_s for e in self.events) - min(e.start_s for e in self.events)

    def busy_s(self, stage: int) -> float:
        return sum(e.end_s - e.start_s for e in self.events if e.stage == stage)

    @property
    def bubble_s(self) -> float:
        """Idle time of the busiest device over the step: makespan - its busy time."""
        return self.makespan_s - max(self.busy_s(s) for s in range(self.pp))

    @property
    def bubble_fraction(self) -> float:
        """Bubble over the ideal (bubble-free) time, the ratio Narayanan et al. give as (p-1)/m."""
        return self.bubble_s / max(self.busy_s(s) for s in range(self.pp))


def _forward_order(m: int, pp: int, v: int) -> list[tuple[int, int]]:
    """(micro-batch, chunk) in the order a device runs its forwards."""
    if v == 1:
        return [(i, 0) for i in range(m)]
    out = []
    for first in range(0, m, pp):  # groups of pp micro-batches, each through every chunk
        group = range(first, min(first + pp, m))
        out += [(i, c) for c in range(v) for i in group]
    return out


def device_order(schedule: Schedule, stage: int, pp: int, m: int, v: int = 1) -> list[Pass]:
    """The passes device `stage` runs, in the order its schedule runs them."""
    forwards = _forward_order(m, pp, v)
    backwards = [(i, v - 1 - c) for i, c in forwards]
    if schedule == "gpipe":
        return [("F", i, c) for i, c in forwards] + [("B", i, c) for i, c in backwards]
    if schedule == "1f1b":
        warmup = min(pp - stage - 1, m)
    else:  # Megatron-LM's interleaved warm-up
        warmup = min((pp - stage - 1) * 2 + (v - 1) * pp, m * v)
    order: list[Pass] = [("F", i, c) for i, c in forwards[:warmup]]
    for k in range(len(forwards) - warmup):
        i, c = forwards[warmup + k]
        order.append(("F", i, c))
        bi, bc = backwards[k]
        order.append(("B", bi, bc))
    order += [("B", i, c) for i, c in backwards[len(forwards) - warmup:]]
    return order


def simulate(schedule: Schedule, pp: int, micro_batches: int, forward_s: Sequence[float],
             backward_s: Sequence[float], virtual_stages: int = 1) -> Timeline:
    """Play the schedule out: every pass with its start and end, in seconds from the step's start.

    `forward_s[s]`, `backward_s[s]`: one micro-batch's forward and backward through all of device
    s's layers; with V chunks each chunk takes 1/V of them (its layers are split evenly)."""
    v = virtual_stages if schedule == "interleaved" else 1
    m = micro_batches
    if pp < 1 or m < 1 or v < 1:
        raise ValueError("simulate: pp, micro_batches and virtual_stages must be >= 1")
    if len(forward_s) != pp or len(backward_s) != pp:
        raise ValueError("simulate: one forward and one backward time per stage")
    if schedule not in ("gpipe", "1f1b", "interleaved"):
        raise ValueError(f"simulate: unknown schedule {schedule!r}")
    if v > 1 and m % pp:
        raise ValueError(f"simulate: the interleaved schedule runs micro-batches in groups of pp; "
                         f"{m} is not a multiple of pp = {pp} (Megatron-LM requires one)")
    orders = [device_order(schedule, s, pp, m, v) for s in range(pp)]
    last = pp * v - 1  # the last virtual stage
    ends: dict[tuple[str, int, int], float] = {}  # (kind, micro-batch, virtual stage) -> end
    events: list[PipelineEvent] = []
    position = [0] * pp
    free = [0.0] * pp
    remaining = sum(len(o) for o in orders)
    while remaining:
        progressed = False
        for s in range(pp):
            while position[s] < len(orders[s]):
                kind, i, c = orders[s][position[s]]
                k = c * pp + s  # virtual stage
                if kind == "F":
                    need = ("F", i, k - 1) if k > 0 else None
                else:
                    need = ("B", i, k + 1) if k < last else ("F", i, k)
                if need is not None and need not in ends:
                    break  # waits for another device
                start = max(free[s], ends[need] if need is not None else 0.0)
                end = start + (forward_s[s] if kind == "F" else backward_s[s]) / v
                ends[(kind, i, k)] = free[s] = end
                events.append(PipelineEvent(s, i, c, kind, start, end))
                position[s] += 1
                remaining -= 1
                progressed = True
        if not progressed:  # every device waits on another: the order is not runnable
            raise RuntimeError(f"simulate: {schedule} deadlocks (pp={pp}, m={m}, V={v})")
    return Timeline(tuple(events), pp, m, v)

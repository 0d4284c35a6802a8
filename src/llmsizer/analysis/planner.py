"""Search the parallel layouts of a training run: enumerate, keep what fits, rank.

Layouts are grouped by what shapes a micro-batch on one device (tp, pp, cp, ep, micro-batch,
recomputation); inside a group the ZeRO stage, offload and pipeline schedule vary and are
evaluated together by llmsizer.analysis.step.evaluate, the same arithmetic `llmsizer train`
uses. Ranking is by the objective; layouts within `tie_tolerance` of each other are ordered by
simplicity in seed 002's order: no ZeRO before ZeRO-1 before ZeRO-2 before ZeRO-3, no offload
before offload, then less recomputation, then smaller model parallelism.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from llmsizer.analysis import step
from llmsizer.analysis.params import validate_parallel
from llmsizer.errors import SpecError
from llmsizer.specs.parallel import Parallelism

RECOMPUTES = ("none", "selective", "full")
SCHEDULE_NAMES = {0: "gpipe", 1: "1f1b", 2: "interleaved"}


@dataclass(frozen=True)
class Framework:
    """The layouts a training framework can run (what its configuration accepts)."""

    name: str
    zero_stages: tuple[int, ...]
    zero_stages_with_pp: tuple[int, ...]
    tp: bool
    pp: bool
    cp: bool
    ep: bool
    schedules: tuple[int, ...]  # SCHEDULE codes: 0 gpipe, 1 1f1b, 2 interleaved
    offload: tuple[tuple[bool, bool], ...]  # allowed (optimizer, params) offloads
    source: str


_MEGATRON = dict(
    zero_stages=(0, 1), zero_stages_with_pp=(0, 1), tp=True, pp=True, cp=True, ep=True,
    schedules=(1, 2), offload=((False, False),))
FRAMEWORKS: dict[str, Framework] = {
    # --use-distributed-optimizer shards optimizer states (ZeRO-1); no ZeRO-2/3, 1F1B and
    # interleaved 1F1B schedules (megatron/training/arguments.py; megatron/core/pipeline_parallel
    # /schedules.py).
    "megatron": Framework("megatron", source="Megatron-LM megatron/training/arguments.py",
                          **_MEGATRON),  # type: ignore[arg-type]
    # NeMo 2 trains through Megatron-Core's strategy: the same layouts.
    "nemo": Framework("nemo", source="NeMo MegatronStrategy (Megatron-Core)",
                      **_MEGATRON),  # type: ignore[arg-type]
    # ZeRO 0-3 with offload; its pipeline engine (PipelineModule) runs 1F1B with ZeRO 0-1 only.
    # Tensor/context/expert parallelism are not in ds_config.json.
    "deepspeed": Framework("deepspeed", (0, 1, 2, 3), (0, 1), False, True, False, False, (1,),
                           ((False, False), (True, False), (True, True)),
                           "deepspeed.ai/docs/config-json; deepspeed.runtime.pipe.engine"),
    # FSDP2 (torch.distributed.fsdp.fully_shard): NO_SHARD (DDP), SHARD_GRAD_OP
    # (reshard_after_forward=False), FULL_SHARD; CPUOffloadPolicy moves parameters, gradients
    # and optimizer together. No pipeline, tensor or context parallelism by itself.
    "fsdp2": Framework("fsdp2", (0, 2, 3), (), False, False, False, False, (1,),
                       ((False, False), (True, True)), "pytorch.org/docs/stable/distributed.fsdp"
                       ".fully_shard.html"),
    # torchtitan: FSDP2 + TP/SP + PP (GPipe, 1F1B, interleaved) + CP + EP.
    "torchtitan": Framework("torchtitan", (0, 2, 3), (0, 2, 3), True, True, True, True,
                            (0, 1, 2), ((False, False), (True, True)),
                            "torchtitan docs: parallelism config (job_config.py)"),
}


def framework(name: str) -> Framework:
    from llmsizer.analysis.frameworks import base_name

    key = base_name(name)  # switches ("megatron+tp-comm-overlap") change timing, not layouts
    if key not in FRAMEWORKS:
        raise SpecError("framework", name, "one of " + ", ".join(FRAMEWORKS))
    return FRAMEWORKS[key]


@dataclass(frozen=True)
class SearchSpace:
    gpus: int
    global_batch: int
    allow_cross_node_tp: bool = False
    micro_batches: tuple[int, ...] = (1, 2, 4, 8, 16)
    recomputes: tuple[str, ...] = RECOMPUTES
    zero_stages: tuple[int, ...] = (0, 1, 2, 3)
    offload: bool = True
    max_cp: int = 8
    min_seq_per_cp_rank: int = 2048
    interleave: tuple[int, ...] = (2, 4)
    framework: Framework | None = None  # only layouts this framework runs


@dataclass(frozen=True)
class Candidate:
    par: Parallelism
    peak_bytes: float
    step_s: float
    stage: int

    @property
    def simplicity(self) -> tuple[int, ...]:
        p = self.par
        offload = 2 if "params" in p.offload else 1 if p.offload else 0
        return (p.zero, offload, RECOMPUTES.index(p.recompute), p.tp * p.pp * p.cp * p.ep,
                p.pp, p.cp, p.ep, {"1f1b": 0, "interleaved": 1, "gpipe": 2}[p.schedule],
                p.virtual_stages, -p.micro_batch)


@dataclass
class SearchResult:
    ranked: list[Candidate]  # fitting layouts, best first (ties by simplicity)
    evaluated: int
    fitting: int
    seconds: float
    capacity_bytes: float
    nearest_misfit: Candidate | None  # faster than the best, closest to fitting
    least_memory: Candidate | None  # smallest peak of all (for an impossible request)
    notes: list[str] = field(default_factory=list)

    @property
    def configs_per_s(self) -> float:
        return self.evaluated / self.seconds if self.seconds else float("inf")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def groups(st: step.Setting, space: SearchSpace) -> list[step.Group]:
    spec = st.spec
    gpn = st.cluster.gpus_per_node
    out = []
    fw = space.framework
    for tp in _divisors(space.gpus):
        if tp > gpn and not space.allow_cross_node_tp:
            continue
        if fw is not None and tp > 1 and not fw.tp:
            continue
        try:
            validate_parallel(spec, tp=tp)
        except SpecError:
            continue
        cps = [c for c in (1, 2, 4, 8, 16) if c <= space.max_cp and st.seq % c == 0
               and (c == 1 or st.seq // c >= space.min_seq_per_cp_rank)
               and (c == 1 or fw is None or fw.cp)]
        for cp in cps:
            if (space.gpus // tp) % cp:
                continue
            for pp in _divisors(space.gpus // (tp * cp)):
                if pp > spec.num_layers or (fw is not None and pp > 1 and not fw.pp):
                    continue
                dp = space.gpus // (tp * cp * pp)
                if space.global_batch % dp:
                    continue
                eps = [1]
                if spec.moe is not None:
                    eps = [e for e in _divisors(spec.moe.num_experts) if (dp * cp) % e == 0
                           and (e == 1 or fw is None or fw.ep)]
                per_rank = space.global_batch // dp
                for ep, mb, rec in itertools.product(eps, space.micro_batches, space.recomputes):
                    if per_rank % mb:
                        continue
                    out.append(step.Group(dp, tp, pp, cp, ep, mb, per_rank // mb, rec, tp > 1))
    return out


def variants(st: step.Setting, g: step.Group, space: SearchSpace) -> step.Variants:
    return _variants(space, g.dp * g.cp > 1, g.pp, st.spec.num_layers)


@lru_cache(maxsize=1024)
def _variants(space: SearchSpace, data_parallel: bool, pp: int, num_layers: int
              ) -> step.Variants:
    rows = []
    fw = space.framework
    for zero in space.zero_stages:
        if zero and not data_parallel:
            continue
        if fw is not None and zero not in (fw.zero_stages_with_pp if pp > 1 else fw.zero_stages):
            continue
        offloads = [(False, False)]
        if space.offload and zero >= 1:
            offloads.append((True, False))
        if space.offload and zero == 3:
            offloads.append((True, True))
        if fw is not None:
            offloads = [o for o in offloads if o in fw.offload]
        schedules = [(1, 1)]
        if pp > 1:
            schedules.append((0, 1))
            schedules += [(2, v) for v in space.interleave if pp * v <= num_layers]
        if fw is not None:
            schedules = [sv for sv in schedules if sv[0] in fw.schedules]
        for (oo, op), (sch, v) in itertools.product(offloads, schedules):
            rows.append((zero, oo, op, sch, v))
    a = np.array(rows, dtype=float).reshape(-1, 5)
    return step.Variants(zero=a[:, 0].astype(int), offload_optimizer=a[:, 1].astype(bool),
                         offload_params=a[:, 2].astype(bool),
                         nvme=np.zeros(len(a), dtype=bool), schedule=a[:, 3].astype(int),
                         virtual_stages=a[:, 4].astype(int))


def _parallelism(g: step.Group, var: step.Variants, i: int) -> Parallelism:
    offload = set()
    if var.offload_optimizer[i]:
        offload.add("optimizer")
    if var.offload_params[i]:
        offload.add("params")
    return Parallelism(dp=g.dp, tp=g.tp, pp=g.pp, cp=g.cp, ep=g.ep,
                       sequence_parallel=g.sequence_parallel, zero=int(var.zero[i]),
                       offload=frozenset(offload), recompute=g.recompute,
                       micro_batch=g.micro_batch, grad_accum=g.grad_accum,
                       schedule=SCHEDULE_NAMES[int(var.schedule[i])],  # type: ignore[arg-type]
                       virtual_stages=int(var.virtual_stages[i]))


def search(st: step.Setting, space: SearchSpace, *, objective: str = "time",
           margin: float = 0.05, top: int = 10, tie_tolerance: float = 0.005,
           progress: Callable[[int, int], None] | None = None) -> SearchResult:
    """Evaluate every layout of `space`; keep those whose most loaded device stays under
    (1 - margin) of its memory; rank by `objective` (time | cost | memory)."""
    if objective not in ("time", "cost", "memory"):
        raise SpecError("objective", objective, "time, cost or memory")
    if not 0 <= margin < 1:
        raise SpecError("margin", margin, "a fraction in [0, 1)")
    t0 = time.perf_counter()
    capacity = st.cluster.accelerator.memory_bytes * (1 - margin)
    all_groups = groups(st, space)
    if not all_groups:
        raise SpecError("gpus", space.gpus, "a GPU count and global batch that admit at least one "
                        f"layout (global batch {space.global_batch} must be divisible by dp)")
    batches = []  # per pipeline depth: (groups, variants, first row of each group, evaluation)
    evaluated = 0
    by_pp: dict[int, list[step.Group]] = {}
    for g in all_groups:
        by_pp.setdefault(g.pp, []).append(g)
    done = 0
    for pp_groups in by_pp.values():
        pairs = [(g, variants(st, g, space)) for g in pp_groups]
        pairs = [(g, v) for g, v in pairs if len(v)]
        done += len(pp_groups)
        if not pairs:
            continue
        gs, vs = [g for g, _ in pairs], [v for _, v in pairs]
        r = step.evaluate(st, gs, vs, all_stages=False)
        starts = np.cumsum([0] + [len(v) for v in vs])
        evaluated += int(starts[-1])
        batches.append((gs, vs, starts, r))
        if progress is not None:
            progress(done, len(all_groups))

    def cand(b: int, row: int) -> Candidate:
        gs, vs, starts, r = batches[b]
        k = int(np.searchsorted(starts, row, side="right")) - 1
        return Candidate(_parallelism(gs[k], vs[k], row - int(starts[k])),
                         float(r.peak_total[row]), float(r.step_s[row]), int(r.peak_stage[row]))

    # Every fitting layout as (batch, row), with its metric.
    fits = [r.peak_total <= capacity for *_, r in batches]
    none = [np.zeros(0, dtype=int)]
    ref_batch = np.concatenate(none + [np.full(int(f.sum()), b) for b, f in enumerate(fits)])
    ref_row = np.concatenate(none + [np.flatnonzero(f) for f in fits])
    fit_metric = np.concatenate(none + [(r.peak_total if objective == "memory" else r.step_s)[f]
                                        for (*_, r), f in zip(batches, fits, strict=True)]
                                ).astype(float).tolist()
    ranked: list[Candidate] = []
    remaining = np.argsort(np.array(fit_metric), kind="stable").tolist()
    while remaining and len(ranked) < top:
        m0 = fit_metric[remaining[0]]
        window = []
        for i in remaining:
            if fit_metric[i] > m0 * (1 + tie_tolerance):
                break
            window.append(i)
        cands = {i: cand(int(ref_batch[i]), int(ref_row[i])) for i in window}
        pick = min(window, key=lambda i: (cands[i].simplicity, fit_metric[i]))
        ranked.append(cands[pick])
        remaining.remove(pick)

    # The nearest miss: of the layouts faster than the chosen one that do not fit, the one that
    # is over the memory limit by the fewest bytes.
    best_step = ranked[0].step_s if ranked else np.inf
    best_misfit = least = None
    for b, ((*_, r), fit) in enumerate(zip(batches, fits, strict=True)):
        faster_misfits = ~fit & (r.step_s < best_step)
        if faster_misfits.any():
            row = int(np.argmin(np.where(faster_misfits, r.peak_total, np.inf)))
            if best_misfit is None or r.peak_total[row] < best_misfit[0]:
                best_misfit = (float(r.peak_total[row]), b, row)
        row = int(np.argmin(r.peak_total))
        if least is None or r.peak_total[row] < least[0]:
            least = (float(r.peak_total[row]), b, row)
    misfit = cand(best_misfit[1], best_misfit[2]) if best_misfit is not None else None
    least_c = cand(least[1], least[2]) if least else None
    return SearchResult(ranked, evaluated, len(fit_metric), time.perf_counter() - t0, capacity,
                        misfit, least_c)

"""Exact parameter counts, read off the op graph.

Totals count tied weights once (as `model.parameters()` does in PyTorch and as published counts
do). `active` is what one token uses: for MoE layers the router, top-k routed experts and the shared
experts. Per-device counts follow Megatron-LM's sharding (Shoeybi et al. 2019; Narayanan et al.
2021): column/row-parallel projections, vocab-parallel embeddings, replicated norms, experts split
across the expert-parallel group, layers split into pipeline stages with the embedding on the first
stage and the output head on the last (which keeps its own copy of a tied embedding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, cached_property

from llmsizer.errors import SpecError
from llmsizer.explain import Quantity, total
from llmsizer.graph import LayerGraph, ModelGraph, Op, Weight, build_graph
from llmsizer.specs.model import ModelSpec


@dataclass(frozen=True)
class ParamCounts:
    """Exact counts for one model."""

    total: int
    active: int  # per token (MoE: top-k routed + shared experts + everything dense)
    embedding: int  # token (+ learned position) embeddings
    non_embedding: int
    breakdown: dict[str, int]  # "attention.q_proj.weight" -> count summed over all layers
    groups: dict[str, int]  # "embedding", "attention", "mlp", "moe", "norms", "lm_head"
    per_layer: dict[int, int]  # layer index -> count
    tied_embeddings: bool
    graph: ModelGraph = field(compare=False, repr=False)
    mtp: int = 0  # multi-token-prediction modules (not in total, as transformers builds it)
    mtp_checkpoint_copies: int = 0  # their copies of the embedding and head in the checkpoint
    excluded: str = ""  # what a multimodal checkpoint holds beyond the language model

    @cached_property
    def explanation(self) -> Quantity:
        """The count as a tree of formulas with values substituted (built on first use)."""
        return explain_params(self.graph)


def _group(component: str) -> str:
    head = component.split(".")[0]
    return {"head": "embedding", "norms": "norms"}.get(head, head)


def count_params(spec: ModelSpec) -> ParamCounts:
    graph = build_graph(spec)
    breakdown: dict[str, int] = {}
    active = 0
    for _, op in graph.all_ops():
        for w in op.weights:
            key = f"{op.component}.{w.name}"
            breakdown[key] = breakdown.get(key, 0) + op.instances * w.numel
        active += op.active_params
    groups: dict[str, int] = {}
    for key, n in breakdown.items():
        g = _group(key)
        groups[g] = groups.get(g, 0) + n
    total_n = sum(breakdown.values())
    embedding = sum(n for k, n in breakdown.items()
                    if k.startswith(("embedding.tokens", "embedding.positions")))
    return ParamCounts(
        total=total_n,
        active=active,
        embedding=embedding,
        non_embedding=total_n - embedding,
        breakdown=breakdown,
        groups=groups,
        per_layer={layer.index: layer.params for layer in graph.layers},
        tied_embeddings=spec.tie_embeddings,
        graph=graph,
        mtp=sum(op.params for op in graph.mtp),
        mtp_checkpoint_copies=2 * spec.mtp_layers * spec.vocab_size * spec.hidden_size,
        excluded=str(spec.extras.get("excluded", "")),
    )


# ---------------------------------------------------------------------------------------------
# --explain: the count as a tree of formulas
# ---------------------------------------------------------------------------------------------

def _symbols(spec: ModelSpec) -> dict[str, int]:
    syms = {"h": spec.hidden_size, "V": spec.vocab_size, "a·d": spec.q_dim, "g·d": spec.kv_dim,
            "f": spec.ffn_size, "P": spec.learned_position_rows, "e": spec.embedding_dim, "1": 1}
    if spec.moe:
        syms |= {"E": spec.moe.num_experts, "f_e": spec.moe.expert_ffn_size,
                 "f_s": spec.moe.shared_expert_ffn_size}
    return syms


def _weight_terms(op: Op, w: Weight) -> list[str]:
    """The symbols whose product is the weight's size: ["h", "f"] for an h→f projection."""
    if w.name == "bias":
        return [op.out_sym]
    if op.kind == "norm":
        return ["h"]
    return [op.in_sym, op.out_sym]


def _op_quantity(op: Op, syms: dict[str, int]) -> Quantity:
    formulas, values = [], []
    for w in op.weights:
        terms = _weight_terms(op, w)
        formulas.append("·".join(terms))
        values.append("·".join(f"{syms[t]:,}" if t in syms else t for t in terms))
    per = sum(w.numel for w in op.weights)
    formula, substituted = " + ".join(formulas), " + ".join(values)
    if op.instances > 1:
        mult = "E" if op.expert_parallel else f"{op.instances}"
        formula = f"{mult}·({formula})"
        substituted = f"{op.instances}·({substituted})"
    return Quantity(name=op.component, value=op.instances * per, unit="params",
                    formula=formula, substituted=substituted)


def _layer_signature(layer: LayerGraph) -> tuple[tuple[str, int], ...]:
    return tuple((op.component, op.params) for op in layer.ops)


def explain_params(graph: ModelGraph) -> Quantity:
    spec = graph.spec
    syms = _symbols(spec)
    parts: list[Quantity] = []
    emb = [_op_quantity(op, syms) for op in graph.embedding if op.weights]
    parts.append(total("embeddings", "params", emb))

    # Identical layers are explained once and multiplied.
    kinds: dict[tuple[tuple[str, int], ...], list[LayerGraph]] = {}
    for layer in graph.layers:
        kinds.setdefault(_layer_signature(layer), []).append(layer)
    for layers in kinds.values():
        first = layers[0]
        ops = [_op_quantity(op, syms) for op in first.ops if op.weights]
        per_layer = total("per layer", "params", ops)
        label = "MoE layers" if spec.is_moe_layer(first.index) else "layers"
        if len(kinds) == 1:
            label = "layers"
        parts.append(Quantity(
            name=f"{label} ({len(layers)} of {spec.num_layers})",
            value=len(layers) * per_layer.value, unit="params",
            formula="L·per_layer" if len(layers) == spec.num_layers else "n·per_layer",
            substituted=f"{len(layers)}·{int(per_layer.value):,}",
            children=(per_layer,)))
    head = [_op_quantity(op, syms) for op in graph.head if op.weights]
    if spec.tie_embeddings:
        head.append(Quantity("lm_head (tied to embedding.tokens: counted once)", 0, "params"))
    parts.append(total("output head", "params", head))
    tree = total("total parameters", "params", parts,
                 source="exact count over the op graph (llmsizer.graph)")
    legend = ", ".join(f"{k}={v:,}" for k, v in syms.items()
                       if k not in ("1",) and v and (k != "P" or spec.learned_position_rows))
    return Quantity(tree.name, tree.value, tree.unit, tree.formula, tree.substituted,
                    f"{tree.source}; {legend}", tree.children)


# ---------------------------------------------------------------------------------------------
# Sharding across tensor, pipeline and expert parallelism
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardedParams:
    """Parameters held by each device of a tp × pp × ep group.

    `per_stage[s]` is what one device of pipeline stage s holds (all TP ranks of a stage hold the
    same amount up to vocab padding); `max_per_device` is the most loaded device.
    """

    tp: int
    pp: int
    ep: int
    stage_layers: tuple[tuple[int, ...], ...]
    per_stage: tuple[int, ...]
    replicated_per_stage: tuple[int, ...]  # parameters every TP rank of the stage holds whole

    @property
    def max_per_device(self) -> int:
        return max(self.per_stage)


@cache
def stage_layers(num_layers: int, pp: int, split: tuple[int, int] | None = None
                 ) -> tuple[tuple[int, ...], ...]:
    """Layers of each pipeline stage: as even as possible, earlier stages take the remainder;
    or, with `split` = (first, last), that many on the first and the last stage and the rest
    spread over the middle ones (Megatron-LM's --decoder-first/last-pipeline-num-layers, used
    to make room for the embedding and the loss; the Llama 3 paper takes one layer off each)."""
    if split is None or pp == 1:
        counts = [num_layers // pp + (1 if s < num_layers % pp else 0) for s in range(pp)]
    else:
        first, last = split
        middle = num_layers - first - last
        if pp == 2:
            counts = [first, last]
        else:
            counts = [first] + [middle // (pp - 2) + (1 if s < middle % (pp - 2) else 0)
                                for s in range(pp - 2)] + [last]
    out, start = [], 0
    for n in counts:
        out.append(tuple(range(start, start + n)))
        start += n
    return tuple(out)


def check_split(num_layers: int, pp: int, split: tuple[int, int] | None) -> None:
    """A first/last stage split must leave every stage at least one layer."""
    if split is None:
        return
    first, last = split
    if pp == 1:
        raise SpecError("first-stage-layers", first, "used with --pp 2 or more")
    middle = num_layers - first - last
    if first < 1 or last < 1 or (pp == 2 and middle != 0) or (pp > 2 and middle < pp - 2):
        need = (f"first + last = num_layers ({num_layers}) with pp 2" if pp == 2 else
                f"first, last >= 1 leaving at least one layer for each of the {pp - 2} "
                f"middle stages (num_layers {num_layers})")
        raise SpecError("first-stage-layers", f"{first}/{last}", need)


def validate_parallel(spec: ModelSpec, tp: int = 1, pp: int = 1, ep: int = 1) -> None:
    for name, v in (("tp", tp), ("pp", pp), ("ep", ep)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise SpecError(name, v, "a positive integer")
    has_attention = any(spec.layer_type(i) not in ("linear_attention", "mamba")
                        for i in range(spec.num_layers))
    if has_attention:
        if spec.num_heads % tp:
            raise SpecError("tp", tp, f"a divisor of num_heads ({spec.num_heads}) for {spec.name}")
        kv = spec.kv_heads
        if spec.mla is None and kv % tp and tp % kv:
            raise SpecError("tp", tp, f"a divisor or multiple of num_kv_heads ({kv}) for "
                            f"{spec.name}")
    # Tensor parallelism splits linear-attention and state-space mixers by heads (channels).
    mixer_heads = []
    if spec.linear_attention is not None:
        la = spec.linear_attention
        mixer_heads += [("linear_num_key_heads", la.num_key_heads),
                        ("linear_num_value_heads", la.num_value_heads)]
    if spec.mamba is not None:
        m = spec.mamba
        mixer_heads += [("mamba d_inner", m.d_inner)] if m.version == 1 else \
            [("mamba num_heads", m.num_heads), ("mamba n_groups", m.n_groups)]
    for what, n in mixer_heads:
        if n % tp:
            raise SpecError("tp", tp, f"a divisor of {what} ({n}) for {spec.name}")
    widths = [("ffn_size", spec.ffn_size)]
    if spec.moe:
        widths.append(("moe.expert_ffn_size", spec.moe.expert_ffn_size))
        if spec.moe.shared_experts:
            widths.append(("moe.shared_expert_ffn_size", spec.moe.shared_expert_ffn_size))
    for name, width in widths:
        if width and width % tp:
            raise SpecError("tp", tp, f"a divisor of {name} ({width}) for {spec.name}")
    if pp > spec.num_layers:
        raise SpecError("pp", pp, f"at most num_layers ({spec.num_layers}) for {spec.name}")
    if ep > 1:
        if spec.moe is None:
            raise SpecError("ep", ep, f"1: {spec.name} has no experts")
        if spec.moe.num_experts % ep:
            raise SpecError("ep", ep, f"a divisor of num_experts ({spec.moe.num_experts})")


@dataclass(frozen=True)
class HeldParams:
    """Parameters one device holds of a set of ops: all, the TP-replicated part, the experts."""

    held: int
    replicated: int
    expert: int

    def __add__(self, other: HeldParams) -> HeldParams:
        return HeldParams(self.held + other.held, self.replicated + other.replicated,
                          self.expert + other.expert)


def _ops_held(ops: tuple[Op, ...], tp: int, ep: int) -> HeldParams:
    held = repl = expert = 0
    for op in ops:
        n, replicated = op.rank_params(tp, ep)
        held += n
        repl += replicated
        expert += n if op.expert_parallel else 0
    return HeldParams(held, repl, expert)


@cache
def layer_held(spec: ModelSpec, index: int, tp: int, ep: int) -> HeldParams:
    """What one device holds of layer `index` (cached; identical layers share one entry)."""
    rep = layer_representative(spec)[index]
    if rep != index:
        return layer_held(spec, rep, tp, ep)
    return _ops_held(build_graph(spec).layers[index].ops, tp, ep)


@cache
def layer_representative(spec: ModelSpec) -> tuple[int, ...]:
    """For each layer, the first layer with exactly the same ops (shapes and windows)."""
    seen: dict[tuple[object, ...], int] = {}
    out = []
    for layer in build_graph(spec).layers:
        key = (layer.ops, layer.sliding_window, layer.chunk)
        out.append(seen.setdefault(key, layer.index))
    return tuple(out)


@cache
def _stage_rep_counts(spec: ModelSpec, pp: int, split: tuple[int, int] | None = None
                      ) -> dict[int, tuple[int, ...]]:
    """For each representative layer r: how many layers like r each pipeline stage holds."""
    rep = layer_representative(spec)
    out: dict[int, list[int]] = {}
    for s, idx in enumerate(stage_layers(spec.num_layers, pp, split)):
        for i in idx:
            if rep[i] not in out:
                out[rep[i]] = [0] * pp
            out[rep[i]][s] += 1
    return {r: tuple(c) for r, c in out.items()}


@dataclass(frozen=True)
class StageClasses:
    """The stages of one pipeline depth and split, in classes of identical stages: the same
    count of each kind of layer, and the same place (first: the embedding; last: the head).
    Whatever a stage holds or costs is a function of its class, so it is computed once per
    class (a model of one kind of layer has at most four: the first, the last, and middle
    stages of n and n+1 layers)."""

    first: tuple[int, ...]  # each class's first stage, ascending
    of_stage: tuple[int, ...]  # each stage's class
    counts: tuple[tuple[int, tuple[int, ...]], ...]  # (representative layer, count per class)
    layers: tuple[int, ...]  # layers per class

    @property
    def last(self) -> int:
        """The last stage's class (always one of its own: it holds the head)."""
        return self.of_stage[-1]


@cache
def stage_classes(spec: ModelSpec, pp: int, split: tuple[int, int] | None = None
                  ) -> StageClasses:
    reps = _stage_rep_counts(spec, pp, split)
    index: dict[tuple[object, ...], int] = {}
    of_stage = tuple(index.setdefault((tuple(c[s] for c in reps.values()), s == 0, s == pp - 1),
                                      len(index)) for s in range(pp))
    first = tuple(of_stage.index(c) for c in range(len(index)))
    layers = stage_layers(spec.num_layers, pp, split)
    return StageClasses(first, of_stage, tuple((r, tuple(c[s] for s in first))
                                               for r, c in reps.items()),
                        tuple(len(layers[s]) for s in first))


@cache
def class_held(spec: ModelSpec, tp: int = 1, pp: int = 1, ep: int = 1,
               split: tuple[int, int] | None = None) -> tuple[HeldParams, ...]:
    """What one device of each class of pipeline stages (StageClasses) holds: its layers, the
    embedding on the first stage, the output head on the last (with its own copy of a tied
    embedding, Megatron-LM)."""
    validate_parallel(spec, tp, pp, ep)
    graph = build_graph(spec)
    classes = stage_classes(spec, pp, split)
    out = []
    for c, s in enumerate(classes.first):
        total = HeldParams(0, 0, 0)
        for r, counts in classes.counts:
            if counts[c]:
                one = layer_held(spec, r, tp, ep)
                k = counts[c]
                total = total + HeldParams(k * one.held, k * one.replicated, k * one.expert)
        if s == 0:
            total = total + _ops_held(graph.embedding, tp, ep)
        if s == pp - 1:
            total = total + _ops_held(graph.head, tp, ep)
            if spec.tie_embeddings and pp > 1:
                # The last stage keeps its own copy of the tied embedding for the output
                # projection; the two copies' gradients are all-reduced (Megatron-LM).
                total = total + _ops_held(graph.embedding[:1], tp, ep)
        out.append(total)
    return tuple(out)


@cache
def stage_held(spec: ModelSpec, tp: int = 1, pp: int = 1, ep: int = 1,
               split: tuple[int, int] | None = None) -> tuple[HeldParams, ...]:
    """What one device of each pipeline stage holds (`class_held`, stage by stage)."""
    held = class_held(spec, tp, pp, ep, split)
    return tuple(held[c] for c in stage_classes(spec, pp, split).of_stage)


def shard_params(spec: ModelSpec, tp: int = 1, pp: int = 1, ep: int = 1) -> ShardedParams:
    stages = stage_held(spec, tp, pp, ep)
    return ShardedParams(tp, pp, ep, stage_layers(spec.num_layers, pp),
                         tuple(h.held for h in stages), tuple(h.replicated for h in stages))

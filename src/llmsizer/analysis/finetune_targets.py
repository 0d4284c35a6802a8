"""Which modules a LoRA/DoRA adapter sits on, and its trainable parameters, as PEFT builds it.

The op graph names a projection generically (q_proj, up_proj, ...); Hugging Face `transformers`
may store several of them as one `nn.Linear` (GPT-2's `c_attn` = Q, K and V; Phi-3's
`qkv_proj`, `gate_up_proj`) or split one of them in two (Qwen3.5's `in_proj_qkv` + `in_proj_z`).
An adapter on a fused module has one A (rank × in) and one B (Σ out × rank), so its size differs
from adapters on the parts. `hf_modules` groups the graph's linear ops into the modules
transformers builds; `adapters` puts LoRA on those a target set selects.

PEFT's rules reproduced here (peft 0.21, transformers 5; tests/test_verify_peft.py checks them
against `get_peft_model` on the meta device for every catalog architecture):

- `all-linear` selects every `nn.Linear`/`Conv1D` except the output embedding (lm_head)
  (peft.tuners.tuners_utils._maybe_include_all_linear_layers).
- transformers 5 stores MoE experts as 3-D parameters, not `nn.Linear`: `all-linear` skips them,
  and most routers are custom modules it skips too (llama4, phimoe and dbrx routers are Linear).
- For the MoE families PEFT converts (peft.utils.transformers_weight_conversion: Mixtral and the
  qwen2_moe pattern: Qwen3-MoE, Qwen3-Next, DeepSeek-V2/V3, GLM-4-MoE, ...), the v4 expert names
  (gate_proj/up_proj/down_proj or w1/w3/w2, and the router `gate`) become `target_parameters`:
  one LoRA per stacked expert tensor, rank ×2 on the fused gate_up_proj (A: 2r·E × h,
  B: 2f × 2r·E), and the router's weight; those names then no longer select modules, so dense
  MLPs and shared experts with the same names get no adapter.
- Mamba models: PEFT refuses `out_proj` and `conv1d`.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsizer.errors import SpecError
from llmsizer.graph import Op, build_graph
from llmsizer.specs.model import ModelSpec

# graph component -> the transformers module leaf that holds it (same leaf and same block =
# one fused nn.Linear). Absent: the leaf is the op's own name.
_QKV_DENSE = {"attention.q_proj": "query_key_value", "attention.k_proj": "query_key_value",
              "attention.v_proj": "query_key_value", "attention.o_proj": "dense",
              "mlp.up_proj": "dense_h_to_4h", "mlp.down_proj": "dense_4h_to_h"}
_GPT2 = {"attention.q_proj": "c_attn", "attention.k_proj": "c_attn", "attention.v_proj": "c_attn",
         "attention.o_proj": "c_proj", "mlp.up_proj": "c_fc", "mlp.down_proj": "c_proj"}
HF_MODULE_NAMES: dict[str, dict[str, str]] = {
    "gpt2": _GPT2, "gpt_bigcode": _GPT2,
    "gpt_neox": _QKV_DENSE, "bloom": _QKV_DENSE, "falcon": _QKV_DENSE,
    "gptj": {"attention.o_proj": "out_proj", "mlp.up_proj": "fc_in", "mlp.down_proj": "fc_out"},
    "opt": {"attention.o_proj": "out_proj", "mlp.up_proj": "fc1", "mlp.down_proj": "fc2"},
    "starcoder2": {"mlp.up_proj": "c_fc", "mlp.down_proj": "c_proj"},
    "phi3": {"attention.q_proj": "qkv_proj", "attention.k_proj": "qkv_proj",
             "attention.v_proj": "qkv_proj", "mlp.gate_proj": "gate_up_proj",
             "mlp.up_proj": "gate_up_proj"},
    "glm4": {"mlp.gate_proj": "gate_up_proj", "mlp.up_proj": "gate_up_proj"},
    "dbrx": {"attention.q_proj": "Wqkv", "attention.k_proj": "Wqkv", "attention.v_proj": "Wqkv",
             "attention.o_proj": "out_proj", "moe.router": "layer"},
    "deepseek_v2": {"attention.kv_a_proj": "kv_a_proj_with_mqa"},
    "deepseek_v3": {"attention.kv_a_proj": "kv_a_proj_with_mqa"},
    "llama4_text": {"moe.router": "router"}, "llama4": {"moe.router": "router"},
    "phimoe": {"moe.router": "router"},
}
# Routers that are an nn.Linear in transformers 5 (elsewhere a custom module all-linear skips).
LINEAR_ROUTERS = frozenset({"llama4", "llama4_text", "phimoe", "dbrx"})
# Qwen3.5 splits what the graph (Qwen3-Next's layout) fuses: in_proj_qkvz = qkv + z and
# in_proj_ba = b + a.
_SPLIT_QWEN35 = frozenset({"qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text"})
# PEFT's transformers-5 MoE conversion (peft/utils/transformers_weight_conversion.py,
# _MODEL_TO_CONVERSION_PATTERN / _MOE_TARGET_MODULE_MAPPING): the v4 names it maps per family.
_QWEN2_PATTERN = ("gate_proj", "up_proj", "down_proj", "gate")
MOE_CONVERSION: dict[str, tuple[str, str, str, str]] = {
    "mixtral": ("w1", "w3", "w2", "gate"),
    **{t: _QWEN2_PATTERN for t in (
        "qwen3_moe", "qwen3_next", "deepseek_v2", "deepseek_v3", "glm4_moe", "olmoe",
        "minimax", "ernie4_5_moe", "dots1", "hunyuan_v1_moe")},
}
MAMBA = frozenset({"mamba", "falcon_mamba", "mamba2"})
MAMBA_REFUSED = frozenset({"out_proj", "conv1d"})  # peft: incompatible with Mamba-based models


@dataclass(frozen=True)
class HFModule:
    """One module as transformers builds it: `instances` copies (experts) in each of `layers`
    layers (or once, outside them)."""

    leaf: str  # the name PEFT matches ("q_proj", "c_attn", "gate_up_proj")
    block: str  # "attention", "mlp", "moe.experts", ... (two modules may share a leaf)
    fan_in: int  # features the module reads
    fan_out: int  # features it writes
    instances: int
    active: int
    linear: bool  # an nn.Linear/Conv1D (all-linear selects it); False: stacked 3-D experts
    layers: int
    ops: tuple[str, ...]  # graph components inside it
    kind_id: int = 0  # which kind of layer (layers of one kind share their ops)

    @property
    def expert(self) -> bool:
        return self.block == "moe.experts"


@dataclass(frozen=True)
class Adapter:
    """A LoRA (or DoRA) adapter on one module, repeated over `layers` layers and `instances`
    experts: A is rank × in, B is out × rank (Hu et al. 2021); DoRA adds a magnitude of `out`
    (Liu et al. 2024)."""

    module: HFModule
    rank: int
    dora: bool

    @property
    def params_per_instance(self) -> int:
        m = self.module
        return self.rank * (m.fan_in + m.fan_out) + (m.fan_out if self.dora else 0)

    @property
    def params(self) -> int:
        return self.module.layers * self.module.instances * self.params_per_instance


def _block(component: str) -> str:
    head, _, rest = component.rpartition(".")
    return head or component


def hf_modules(spec: ModelSpec, model_type: str) -> list[HFModule]:
    """The graph's linear ops grouped into transformers' modules (fused where it fuses them),
    counted over layers; embedding-side and head-side projections once (lm_head excluded)."""
    names = HF_MODULE_NAMES.get(model_type, {})
    g = build_graph(spec)
    out: dict[tuple[str, str, int, str], list] = {}
    layer_groups: list[tuple[str, tuple[Op, ...], int]] = [("embedding", g.embedding, 1),
                                                          ("head", g.head, 1)]
    counts: dict[int, int] = {}
    first: dict[int, tuple[Op, ...]] = {}
    for layer in g.layers:  # layers of one kind share one ops tuple
        counts[id(layer.ops)] = counts.get(id(layer.ops), 0) + 1
        first.setdefault(id(layer.ops), layer.ops)
    layer_groups += [("layers", ops, counts[k]) for k, ops in first.items()]
    for where, ops, n in layer_groups:
        for op in ops:
            if op.kind not in ("linear", "router") or not op.weights or op.name == "lm_head":
                continue
            fan_in, fan_out = op.io_features()
            parts: list[tuple[str, int]] = [(names.get(op.component, op.name), fan_out)]
            if model_type in _SPLIT_QWEN35 and op.name == "in_proj_qkvz":
                v = next(o.io_features()[1] for o in ops if o.kind == "scan")  # value_dim
                parts = [("in_proj_qkv", fan_out - v), ("in_proj_z", v)]
            elif model_type in _SPLIT_QWEN35 and op.name == "in_proj_ba":
                half = fan_out // 2
                parts = [("in_proj_b", half), ("in_proj_a", half)]
            block = _block(op.component)
            linear = block != "moe.experts" and (
                op.kind != "router" or model_type in LINEAR_ROUTERS)
            for leaf, out_f in parts:
                key = (where, block, id(ops), leaf)
                entry = out.setdefault(key, [leaf, block, fan_in, 0, op.instances,
                                             op.active, linear, n, []])
                entry[3] += out_f
                entry[8].append(op.component)
    return [HFModule(leaf, block, i, o, inst, act, lin, n, tuple(c), key[2])
            for key, (leaf, block, i, o, inst, act, lin, n, c) in out.items()]


def _fused_experts(mods: list[HFModule], ops: tuple[str, ...], leaf: str) -> list[HFModule]:
    """The stacked expert tensors PEFT wraps, one per kind of layer (gate_up_proj: gate and up
    side by side)."""
    kinds: dict[tuple[int, int], list[HFModule]] = {}
    for m in mods:
        if m.expert and m.ops[0].rsplit(".", 1)[-1] in ops:
            kinds.setdefault((m.layers, m.kind_id), []).append(m)
    return [HFModule(leaf, p[0].block, p[0].fan_in, sum(m.fan_out for m in p),
                     p[0].instances, p[0].active, False, p[0].layers,
                     tuple(c for m in p for c in m.ops), p[0].kind_id)
            for p in kinds.values()]


def parse_targets(text: str) -> tuple[str, ...]:
    """"all-linear" or a comma-separated list of module names."""
    t = text.strip()
    if t.lower() == "all-linear":
        return ("all-linear",)
    names = tuple(x.strip() for x in t.split(",") if x.strip())
    if not names or any(not n.replace("_", "").replace(".", "").isalnum() for n in names):
        raise SpecError("lora_targets", text, "all-linear or module names such as q_proj,v_proj")
    return names


def adapters(spec: ModelSpec, model_type: str, targets: tuple[str, ...], rank: int,
             dora: bool = False) -> list[Adapter]:
    """The adapters PEFT's LoraConfig(target_modules=targets, r=rank) creates."""
    mods = hf_modules(spec, model_type)
    all_linear = targets == ("all-linear",)
    if model_type in MAMBA:
        bad = MAMBA_REFUSED & set(targets)
        if bad:
            raise SpecError("lora_targets", ",".join(targets),
                            f"modules PEFT accepts on Mamba models (not {', '.join(sorted(bad))})")
    if all_linear:
        wanted = {m.leaf for m in mods if m.linear}
        if model_type in MAMBA:
            wanted -= MAMBA_REFUSED
    else:
        wanted = set(targets)
        known = {m.leaf for m in mods} | set(MOE_CONVERSION.get(model_type, ()))
        unknown = sorted(wanted - known)
        if unknown:
            raise SpecError("lora_targets", ",".join(targets),
                            f"module names of this model: {', '.join(sorted(known))} "
                            f"(or all-linear); not {', '.join(unknown)}")
    out: list[Adapter] = []
    conv = MOE_CONVERSION.get(model_type)
    if conv is not None and spec.moe is not None:
        gate, up, down, router = conv
        if all_linear:
            wanted |= set(conv)
        hit = wanted & {gate, up}
        if len(hit) == 1:
            raise SpecError("lora_targets", ",".join(targets),
                            f"{gate} and {up} together: transformers 5 fuses them into "
                            "gate_up_proj (PEFT refuses one without the other)")
        if hit:
            # PEFT doubles r on the fused pair
            out += [Adapter(m, 2 * rank, dora)
                    for m in _fused_experts(mods, ("gate_proj", "up_proj"), "gate_up_proj")]
        if down in wanted:
            out += [Adapter(m, rank, dora)
                    for m in _fused_experts(mods, ("down_proj",), "down_proj")]
        if router in wanted:
            out += [Adapter(m, rank, dora) for m in mods if m.block == "moe"
                    and m.ops[0] == "moe.router"]
        # The converted names no longer select modules.
        wanted -= set(conv)
    for m in mods:
        if m.leaf in wanted and m.linear:
            if m.ops[0] == "moe.router" and conv is not None:
                continue
            out.append(Adapter(m, rank, dora))
    if not out:
        raise SpecError("lora_targets", ",".join(targets), "module names that select at least "
                        "one linear layer of this model")
    return out


def trainable_params(spec: ModelSpec, model_type: str, targets: tuple[str, ...], rank: int,
                     dora: bool = False) -> int:
    return sum(a.params for a in adapters(spec, model_type, targets, rank, dora))

"""The op graph is the single source of every count, FLOP and shard (issue 9).

Two kinds of check: (1) no analysis module re-derives a linear's shape, FLOPs or shard size from
the spec (a source scan: such arithmetic lives in graph.py only); (2) `params`, `train` and `infer`
agree on what each device holds, for every catalog model and several tensor-parallel degrees —
the disagreement this replaced was Llama-2-70B at tp=16, where `params` kept one whole K head per
rank (1,048,576 k_proj weights) and the serving roofline streamed half of it.
"""

import re
from pathlib import Path

import pytest

from llmsizer.analysis import inference
from llmsizer.analysis.cluster import Cluster
from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.params import shard_params, validate_parallel
from llmsizer.analysis.training import train_step
from llmsizer.catalog import get_accelerator, get_model, list_models
from llmsizer.errors import SpecError
from llmsizer.graph import build_graph
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import optimizer, training_precision

SRC = Path(__file__).resolve().parents[1] / "src" / "llmsizer"
# Modules that turn the graph into numbers; planner.py enumerates layouts (gpus // tp is layout
# arithmetic, not a weight's shard) and is left out.
SCANNED = [p for p in (SRC / "analysis").glob("*.py") if p.name != "planner.py"] + \
    list((SRC / "serving").glob("*.py"))
FORBIDDEN = {
    "an op's matrix dimensions read outside the graph": re.compile(r"\b(in|out)_features\b"),
    "a size divided by the tensor-parallel degree": re.compile(r"//?\s*(?:cfg\.|self\.|g\.)?tp\b"),
    "a linear's FLOPs written out": re.compile(r"2\s*\*\s*\w*tokens\w*\s*\*\s*\w+\s*\*\s*\w+"),
}


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: p.name)
def test_no_module_rederives_shapes_flops_or_shards(path):
    text = path.read_text("utf-8")
    for what, pattern in FORBIDDEN.items():
        hits = [line.strip() for line in text.splitlines() if pattern.search(line)]
        assert not hits, f"{path.name}: {what}: {hits}"


def test_the_scan_would_catch_the_old_code():
    # The patterns above must match what the graph replaced, or the test above proves nothing.
    old = ["k, n = op.in_features, op.out_features", "n = math.ceil(n / cfg.tp)",
           "return 2 * tokens * op.active * op.in_features * op.out_features",
           "qkvo = e * tokens * (2 * spec.q_dim + 2 * spec.kv_dim) / tp"]
    caught = [line for line in old if any(p.search(line) for p in FORBIDDEN.values())]
    assert caught == old


def _layouts():
    for entry in list_models():
        spec = entry.spec()
        for tp in (1, 2, 8, 16):
            try:
                validate_parallel(spec, tp)
            except SpecError:
                continue
            yield pytest.param(entry.name, tp, id=f"{entry.name}-tp{tp}")


@pytest.mark.parametrize("name,tp", list(_layouts()))
def test_params_train_and_infer_agree_on_the_weights_each_device_holds(name, tp):
    spec = get_model(name)
    held = shard_params(spec, tp=tp).max_per_device
    # infer: bf16 weights are 2 bytes per parameter held
    cfg = inference.ServingConfig(tp=tp)
    assert inference.weight_bytes_per_device(spec, cfg) == 2 * held
    # train: bf16 weights of a mixed-precision run without ZeRO, one pipeline stage
    if tp <= 8:
        r = train_step(spec, Parallelism(tp=tp), training_precision("mixed"), optimizer("adam"),
                       64, Cluster(get_accelerator("h100")))
        assert r.memory.peak.weights == 2 * held


@pytest.mark.parametrize("name,tp", [("llama-2-70b", 16), ("llama-3-8b", 8), ("mixtral-8x7b", 2),
                                     ("qwen3-32b", 16)])
def test_the_decode_roofline_streams_the_weights_each_device_holds(name, tp):
    spec = get_model(name)
    acc = get_accelerator("h100")
    eff = Efficiency()
    cfg = inference.ServingConfig(tp=tp)
    topo = inference._topology(acc, 16, eff)
    p = inference.forward_pass(spec, acc, cfg, eff, 4096, 1, 8, topology=topo, decode=True)
    graph = build_graph(spec)
    layer_linears = [op for layer in graph.layers for op in layer.ops
                     if op.kind in ("linear", "router")]
    held = sum(op.rank_params(tp, 1)[0] for op in layer_linears)
    # a decode step of 4,096 sequences reaches every expert; subtract the activations in and out
    acts = sum(op.rank_gemm(4096, tp).activation_elements for op in layer_linears)
    streamed = sum(o.bytes for o in p.ops if o.layer is not None and o.op != "attention.core")
    assert streamed - 2 * acts == pytest.approx(2 * held, rel=1e-3)


@pytest.mark.parametrize("entry", list_models(), ids=lambda e: e.name)
def test_every_catalog_model_is_served_and_trained(entry):
    """params, train and infer answer for every catalog model, old and new (MLA, hybrid, SSM,
    MoE): positive times and bytes, and decode reads at least the weights once."""
    spec = entry.spec()
    acc = get_accelerator("h200")
    seq = min(1024, spec.max_seq_len)
    r = inference.serve(spec, acc, inference.ServingConfig(), batch=2, prompt=seq // 2,
                        output=seq // 4)
    assert r.ttft_s > 0 and r.tpot_s > 0 and r.memory.weights > 0
    t = train_step(spec, Parallelism(dp=8, zero=3), training_precision("mixed"),
                   optimizer("adam"), seq, Cluster(acc))
    assert t.time.total_s > 0 and 0 < t.mfu <= 1 and t.memory.peak.total > 0


def test_mla_activations_take_value_widths_from_the_graph():
    from llmsizer.analysis.activations import layer_activations

    spec = get_model("deepseek-v3")
    saved = {t.name: t.bytes for t in layer_activations(spec, 1, 4096, flash=True).saved}
    # 128 heads: keys of 192 (128 nope + 64 rope), values and attention output of 128
    assert saved["Q and K"] == 2 * 4096 * (128 * 192 + 128 * 192)
    assert saved["V"] == 2 * 4096 * 128 * 128
    assert saved["output projection input"] == 2 * 4096 * 128 * 128


def test_a_pure_state_space_layer_keeps_no_feed_forward_tensors():
    from llmsizer.analysis.activations import layer_activations

    spec = get_model("falcon3-mamba-7b-base")
    names = [t.name for t in layer_activations(spec, 1, 1024).saved]
    assert not any("MLP" in n or "projection output" in n for n in names)
    assert any("scan" in n for n in names) and any("conv1d" in n for n in names)

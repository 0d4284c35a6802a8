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
# A bare sequence-length or batch name (not an attribute such as g.micro_batch).
_SB = r"(?<![.\w])(?:s|seq|seq_local|b|batch|mb|micro_batch)"
_BYTES = r"(?<![.\w])(?:e|act_bytes|act_b)"
_WIDTH = r"\bspec\.(?:hidden_size|ffn_size|vocab_size|q_dim|kv_dim|head_size|num_heads|kv_heads|moe)\b"
FORBIDDEN = {
    "an op's matrix dimensions read outside the graph": re.compile(r"\b(in|out)_features\b"),
    "a size divided by the tensor-parallel degree": re.compile(r"//?\s*(?:cfg\.|self\.|g\.)?tp\b"),
    "a linear's FLOPs written out": re.compile(r"2\s*\*\s*\w*tokens\w*\s*\*\s*\w+\s*\*\s*\w+"),
    # What a layer keeps for backward is stated by the graph (Op/LayerGraph.saved_tensors,
    # ModelGraph.saved_outside_layers); activations.py only converts and sums it.
    "a saved tensor's bytes written outside the graph":
        re.compile(r"\bSaved\(\s*(?:f?\"[^\"]*\"|\w+)\s*,\s*[^,()]*[*/]"),
    "an attention-score (s²) tensor sized outside the graph":
        re.compile(r"(?<![.\w])(s|seq\w*)\s*\*\s*\1\b|(?<![.\w])(?:s|seq\w*)\s*\*\*\s*2\b"),
    "activation bytes of a micro-batch from a spec width":
        re.compile(rf"^(?=.*(?:{_BYTES}\s*\*|\*\s*{_BYTES}\b))(?=.*{_SB}\s*\*)(?=.*{_WIDTH})"),
}
# Lines that still do what FORBIDDEN names, each with why and where it goes: remove an entry when
# its line moves to the graph.
PENDING: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: p.name)
def test_no_module_rederives_shapes_flops_or_shards(path):
    text = path.read_text("utf-8")
    for what, pattern in FORBIDDEN.items():
        hits = [line.strip() for line in text.splitlines() if pattern.search(line)
                and (path.name, line.strip()) not in PENDING]
        assert not hits, f"{path.name}: {what}: {hits}"


def test_the_scan_would_catch_the_old_code():
    # The patterns above must match what the graph replaced, or the test above proves nothing.
    old = ["k, n = op.in_features, op.out_features", "n = math.ceil(n / cfg.tp)",
           "return 2 * tokens * op.active * op.in_features * op.out_features",
           "qkvo = e * tokens * (2 * spec.q_dim + 2 * spec.kv_dim) / tp",
           # activations.py before the saved tensors moved into the graph
           'Saved("QKV projection input", e * sbh / rep, "e·s·b·h" + _div(rep)),',
           'saved.append(Saved(f"{op.name} input", e * s * b * k, f"e·s·b·{op.in_sym}"))',
           "Saved(\"softmax output (fp32)\", 4 * a * s * s * b / t, \"4·a·s²·b\" + _div(t))",
           "attn = 0 if recompute == 'selective' else 5 * a * seq * seq",
           'rope = 0 if recompute == "full" else 2 * s * spec.head_size * e',
           "sbh = act_bytes * batch * seq * spec.hidden_size"]
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


@pytest.mark.parametrize("name", ["gpt2", "llama-2-70b", "mixtral-8x7b", "deepseek-v3",
                                  "qwen3-next-80b-a3b", "falcon3-mamba-7b-base"])
@pytest.mark.parametrize("convention", ["megatron", "hf-sdpa"])
def test_activation_bytes_are_the_graphs_saved_tensors_summed(name, convention):
    from llmsizer.analysis.activations import layer_activations, output_activations
    from llmsizer.graph import Saving

    spec = get_model(name)
    if convention != "megatron" and spec.norm != "rmsnorm":
        pytest.skip("the Hugging Face conventions describe RMSNorm layers")
    graph = build_graph(spec)
    how = Saving(convention, tp=2, sequence_parallel=True)
    for i in {0, spec.num_layers - 1}:
        kept = graph.layers[i].saved_tensors(2, 1024, how)
        ours = layer_activations(spec, 2, 1024, convention=convention, tp=2,
                                 sequence_parallel=True, layer_index=i)
        assert [s.name for s in ours.saved] == [t.name for t in kept]
        assert ours.bytes == sum(t.bytes(2) for t in kept)
    outside = graph.saved_outside_layers(2, 1024, how)
    assert output_activations(spec, 2, 1024, convention=convention, tp=2,
                              sequence_parallel=True).bytes == sum(t.bytes(2) for t in outside)


def test_q_k_and_v_keep_their_shared_input_once():
    from llmsizer.graph import Saving

    layer = build_graph(get_model("llama-2-7b")).layers[0]
    how = Saving("hf-sdpa")
    by_op = {op.name: op.saved_tensors(1, 8, how) for op in layer.ops}
    assert by_op["q_proj"] == by_op["k_proj"] == by_op["v_proj"]  # one storage, read three times
    names = [t.name for t in layer.saved_tensors(1, 8, how)]
    assert names.count("Q/K/V projection input") == 1


def test_masks_are_one_byte_and_statistics_fp32_whatever_the_activation_dtype():
    from llmsizer.analysis.activations import layer_activations

    spec = get_model("gpt2")  # 12 heads, h = 768
    s, b, a, h = 1024, 1, 12, 768
    saved = {t.name: t.bytes for t in layer_activations(spec, b, s, act_bytes=4).saved}
    assert saved["attention dropout mask"] == a * s * s * b
    assert saved["softmax output"] == 4 * a * s * s * b
    assert saved["MLP residual dropout mask"] == s * b * h
    flash = {t.name: t.bytes for t in layer_activations(spec, b, s, act_bytes=1, flash=True).saved}
    assert flash["softmax log-sum-exp (fp32)"] == 4 * a * s * b


def test_mla_keeps_value_wide_tensors_under_the_hf_conventions_too():
    from llmsizer.analysis.activations import layer_activations

    spec = get_model("deepseek-v3")  # 128 heads; keys 192 wide (128 nope + 64 rope), values 128
    s = 4096
    sdpa = {t.name: t.bytes for t in layer_activations(spec, 1, s, convention="hf-sdpa").saved}
    assert sdpa["Q"] == 2 * s * 128 * 192
    # V is a view of kv_b_proj's output: the kernel keeps it whole, no-rope keys (128) included
    assert sdpa["K and V"] == 2 * s * (128 * 192 + 128 * (128 + 128))
    assert sdpa["output projection input"] == 2 * s * 128 * 128
    eager = {t.name: t.bytes for t in layer_activations(spec, 1, s, convention="hf-eager").saved}
    assert eager["Q, K and V (K/V repeated to query heads)"] == 2 * s * 128 * (192 + 192 + 128)


def test_a_hybrid_layer_keeps_its_feed_forward_down_projection_input_once():
    from llmsizer.analysis.activations import layer_activations

    spec = get_model("qwen3-next-80b-a3b")
    moe = spec.moe
    assert spec.layer_type(0) == "linear_attention" and moe is not None
    s = 1024
    saved = layer_activations(spec, 1, s, layer_index=0).saved
    down = [t for t in saved if "down" in t.name]
    assert [t.name for t in down] == ["down projection input"]
    # a token's top-k routed experts and its shared expert(s)
    width = moe.top_k * moe.expert_ffn_size + moe.shared_experts * moe.shared_expert_ffn_size
    assert down[0].bytes == 2 * s * width

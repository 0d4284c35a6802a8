"""Activation memory against the bytes PyTorch actually keeps for backward.

A small Hugging Face Llama runs a real forward pass on the CPU inside
`torch.autograd.graph.saved_tensors_hooks`; every kept tensor is attributed to the module that first
saves its storage (views share storage and count once; parameters are skipped). llmsizer's
"hf-eager" / "hf-sdpa" conventions must give the same bytes per layer and outside the layers, and
the op graph's tensors of each block (norm, attention, MLP) the bytes its modules save.
"""

import collections
import itertools

import pytest

from llmsizer.analysis.activations import layer_activations, output_activations
from llmsizer.graph import Saving, build_graph
from llmsizer.specs.hf import spec_from_hf_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.verify

H, HEADS, HEAD_DIM, FFN, VOCAB, LAYERS = 256, 8, 32, 688, 1000, 3


def kept_bytes(config: dict, impl: str, dtype, batch: int, seq: int, checkpointing: bool):
    """Bytes kept for backward in one forward pass: {layer index: bytes}, the rest, and
    {module name: bytes} for the modules inside the layers."""
    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model(
        config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=impl,
                                                          dtype=dtype).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    names = {module: name for name, module in model.named_modules()}
    where = ["outside"]
    for module in model.modules():
        module.register_forward_pre_hook(lambda mod, args: where.append(names[mod]))
        module.register_forward_hook(lambda mod, args, out: where.pop() and None)
    seen: set[int] = set()
    per_layer: collections.Counter = collections.Counter()
    per_module: collections.Counter = collections.Counter()
    outside = 0

    def pack(tensor):
        nonlocal outside
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in param_storages or ptr in seen or storage.nbytes() == 0:
            return tensor
        seen.add(ptr)
        name = where[-1]
        if name.startswith("model.layers."):
            per_layer[int(name.split(".")[2])] += storage.nbytes()
            per_module[name] += storage.nbytes()
        else:
            outside += storage.nbytes()
        return tensor

    ids = torch.randint(0, config["vocab_size"], (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return per_layer, outside, per_module


CASES = [
    # impl, dtype, kv heads, batch, seq, checkpointing
    *itertools.product(["eager", "sdpa"], ["float32", "bfloat16"], [8, 2], [2], [64], [False]),
    ("eager", "bfloat16", 2, 1, 128, False),
    ("sdpa", "float32", 8, 1, 128, False),
    ("eager", "bfloat16", 2, 2, 64, True),
    ("sdpa", "float32", 8, 1, 64, True),
]


@pytest.mark.parametrize("impl,dtype,kv,batch,seq,ckpt", CASES)
def test_saved_bytes_match_the_hf_convention(impl, dtype, kv, batch, seq, ckpt):
    config = dict(model_type="llama", hidden_size=H, num_attention_heads=HEADS,
                  num_key_value_heads=kv, head_dim=HEAD_DIM, intermediate_size=FFN,
                  vocab_size=VOCAB, num_hidden_layers=LAYERS, attention_dropout=0.0,
                  tie_word_embeddings=False)
    spec = spec_from_hf_config(config)
    torch_dtype = getattr(torch, dtype)
    e = torch.tensor([], dtype=torch_dtype).element_size()
    per_layer, outside, _ = kept_bytes(config, impl, torch_dtype, batch, seq, ckpt)
    recompute = "full" if ckpt else "none"
    ours = layer_activations(spec, batch, seq, convention=f"hf-{impl}", act_bytes=e,
                             recompute=recompute).bytes
    head = output_activations(spec, batch, seq, convention=f"hf-{impl}", act_bytes=e,
                              recompute=recompute).bytes
    # The rotary cos/sin are computed once and first saved inside layer 0's attention: llmsizer
    # books them outside the layers.
    rope = 0 if ckpt else 2 * seq * HEAD_DIM * e
    assert [per_layer[i] for i in range(1, LAYERS)] == [ours] * (LAYERS - 1)
    assert per_layer[0] == ours + rope
    assert outside + rope == head


def _config(kv: int) -> dict:
    return dict(model_type="llama", hidden_size=H, num_attention_heads=HEADS,
                num_key_value_heads=kv, head_dim=HEAD_DIM, intermediate_size=FFN,
                vocab_size=VOCAB, num_hidden_layers=LAYERS, attention_dropout=0.0,
                tie_word_embeddings=False)


@pytest.mark.parametrize("impl,dtype,kv", [("eager", "bfloat16", 2), ("sdpa", "bfloat16", 2),
                                           ("eager", "float32", 8), ("sdpa", "float32", 8)])
def test_each_block_of_the_graph_keeps_what_its_modules_save(impl, dtype, kv):
    """Layer 1 (layer 0 also holds the shared rotary cos/sin), block by block: the input and
    post-attention RMSNorms against the layer's norm tensors, self_attn.* against the attention
    ops' tensors (q/k/v share their input), mlp.* against the FFN ops' tensors."""
    config = _config(kv)
    torch_dtype = getattr(torch, dtype)
    e = torch.tensor([], dtype=torch_dtype).element_size()
    batch, seq = 2, 64
    _, _, per_module = kept_bytes(config, impl, torch_dtype, batch, seq, False)
    theirs: collections.Counter = collections.Counter()
    for name, n in per_module.items():
        if name.startswith("model.layers.1."):
            theirs[name.split(".")[3]] += n  # input_layernorm, self_attn, ... of layer 1
    layer = build_graph(spec_from_hf_config(config)).layers[1]
    how = Saving(f"hf-{impl}", fp32_activations=e == 4)
    ours: collections.Counter = collections.Counter()
    keys: set[str] = set()
    for op in layer.ops:
        block = {"attention": "self_attn", "mlp": "mlp"}.get(op.component.split(".")[0])
        for t in op.saved_tensors(batch, seq, how):
            if block is not None and not (t.key and t.key in keys):
                keys.add(t.key)
                ours[block] += t.bytes(e)
    for t in layer.saved_tensors(batch, seq, how):
        if "RMSNorm" in t.name:
            norm = "input_layernorm" if t.name.startswith("attention") else \
                "post_attention_layernorm"
            ours[norm] += t.bytes(e)
    assert ours == theirs


# Multi-head latent attention (DeepSeek-V2, arXiv 2405.04434 sec. 2.1): a tiny model whose widths
# are all different, so that a tensor booked at the wrong width cannot match by accident.
# All layers dense (first_k_dense_replace = layers): the latent path is what is checked here.
MLA = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=32,
           qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12, intermediate_size=160,
           moe_intermediate_size=40, n_routed_experts=4, num_experts_per_tok=2,
           n_shared_experts=1, first_k_dense_replace=LAYERS, num_hidden_layers=LAYERS,
           vocab_size=VOCAB, attention_dropout=0.0, tie_word_embeddings=False)
MLA_CASES = [
    # model_type, q_lora_rank, impl, dtype
    *itertools.product(["deepseek_v3"], [48], ["eager", "sdpa"], ["bfloat16", "float32"]),
    *itertools.product(["deepseek_v2"], [None], ["eager", "sdpa"], ["bfloat16"]),
]


def _mla_config(model_type: str, q_lora, impl: str) -> dict:
    config = dict(MLA, model_type=model_type, q_lora_rank=q_lora)
    if impl == "sdpa":
        # PyTorch's CPU SDPA has no fused kernel for values narrower than keys: it falls back to
        # the math kernel (an s² tensor, and fp32 copies of 16-bit inputs), which hf-sdpa does
        # not describe; on a GPU the memory-efficient kernel takes d_v != d_qk. Equal widths
        # here keep the fused CPU kernel.
        config["v_head_dim"] = config["qk_nope_head_dim"] + config["qk_rope_head_dim"]
    if model_type == "deepseek_v3":
        config.update(n_group=1, topk_group=1)
    return config


@pytest.mark.parametrize("model_type,q_lora,impl,dtype", MLA_CASES)
def test_mla_saved_bytes_match_the_hf_convention(model_type, q_lora, impl, dtype):
    """Per layer, outside the layers, and block by block within a layer: the latent RMSNorms and
    the up-projections' inputs, V kept as kv_b_proj's whole output under SDPA, and the rotary
    cos/sin as wide as qk_rope_head_dim. DeepSeek-V2 keeps its rotary table as complex64
    (4·s·d_rope bytes whatever the dtype): equal to V3's cos/sin only in 16-bit, the case run."""
    config = _mla_config(model_type, q_lora, impl)
    spec = spec_from_hf_config(config)
    torch_dtype = getattr(torch, dtype)
    e = torch.tensor([], dtype=torch_dtype).element_size()
    batch, seq = 2, 16
    per_layer, outside, per_module = kept_bytes(config, impl, torch_dtype, batch, seq, False)
    ours = layer_activations(spec, batch, seq, convention=f"hf-{impl}", act_bytes=e).bytes
    head = output_activations(spec, batch, seq, convention=f"hf-{impl}", act_bytes=e).bytes
    rope = 2 * seq * config["qk_rope_head_dim"] * e
    assert [per_layer[i] for i in range(1, LAYERS)] == [ours] * (LAYERS - 1)
    assert per_layer[0] == ours + rope
    assert outside + rope == head
    # block by block: self_attn (the latent norms are its modules) and the MLP
    theirs: collections.Counter = collections.Counter()
    for name, n in per_module.items():
        if name.startswith("model.layers.1.") and name.split(".")[3] in ("self_attn", "mlp"):
            theirs[name.split(".")[3]] += n
    layer = build_graph(spec).layers[1]
    how = Saving(f"hf-{impl}", fp32_activations=e == 4)
    mine: collections.Counter = collections.Counter()
    keys: set[str] = set()
    for op in layer.ops:
        block = "mlp" if op.component.startswith("mlp.") else "self_attn" \
            if op.component.startswith(("attention.", "norms.q_a", "norms.kv_a")) else None
        for t in op.saved_tensors(batch, seq, how):
            if block is not None and not (t.key and t.key in keys):
                keys.add(t.key)
                mine[block] += t.bytes(e)
    assert mine == theirs


def test_mla_latent_tensors_are_kept_under_every_convention():
    config = _mla_config("deepseek_v3", 48, "eager")
    spec = spec_from_hf_config(config)
    s, r_q, r_kv = 16, 48, 32
    for convention in ("megatron", "hf-eager", "hf-sdpa"):
        saved = {t.name: t.bytes for t in layer_activations(spec, 1, s, convention=convention).saved}
        assert saved["q_b_proj input"] == 2 * s * r_q
        assert saved["kv_b_proj input"] == 2 * s * r_kv
        if convention == "megatron":
            assert saved["q_a norm input"] == 2 * s * r_q
            assert saved["kv_a norm input"] == 2 * s * r_kv
        else:
            assert saved["kv_a RMSNorm fp32 input copy"] == 4 * s * r_kv
            assert saved["kv_a RMSNorm normalised output"] == 2 * s * r_kv


# Gemma 2 and 3: four RMSNorms per layer (sandwich), GeGLU. Softcapping off and a window wider
# than the sequence, so that neither a tanh of the scores nor an explicit mask is kept.
GEMMA = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
             intermediate_size=160, num_hidden_layers=LAYERS, vocab_size=VOCAB,
             attention_dropout=0.0, tie_word_embeddings=False, sliding_window=64,
             attn_logit_softcapping=None, final_logit_softcapping=None)


@pytest.mark.parametrize("model_type,impl,dtype", [
    ("gemma2", "eager", "bfloat16"), ("gemma2", "eager", "float32"),  # no SDPA path in Gemma 2
    ("gemma3_text", "eager", "bfloat16"), ("gemma3_text", "sdpa", "bfloat16"),
    ("gemma3_text", "sdpa", "float32")])
def test_sandwich_norm_layers_keep_four_norms(model_type, impl, dtype):
    """Every one of the four norm modules saves an RMSNorm's tensors in transformers' Gemma
    flavour, which multiplies by (1 + w) in fp32 (its normalised output is fp32 and 1 + w a
    tensor of its own); Gemma 3's per-head q/k norms keep the same per head; the embedding's
    √h scale is a one-element tensor."""
    config = dict(GEMMA, model_type=model_type)
    spec = spec_from_hf_config(config)
    torch_dtype = getattr(torch, dtype)
    e = torch.tensor([], dtype=torch_dtype).element_size()
    b, s, a, g, d = 2, 16, 4, 2, 24
    per_layer, outside, per_module = kept_bytes(config, impl, torch_dtype, b, s, False)
    layer = layer_activations(spec, b, s, convention=f"hf-{impl}", act_bytes=e)
    head = output_activations(spec, b, s, convention=f"hf-{impl}", act_bytes=e).bytes
    norm_modules = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                    "post_feedforward_layernorm")
    assert all(per_module[f"model.layers.1.{m}"] > 0 for m in norm_modules)
    assert sum("RMSNorm fp32 rsqrt" in t.name for t in layer.saved) == \
        (4 if model_type == "gemma2" else 6)
    # by hand, the q/k norms of Gemma 3: fp32 copy, rsqrt and fp32 output over a·d and g·d
    # per token, and their 1 + w
    qk = sum(t.bytes for t in layer.saved if t.name.startswith(("Q norm", "K norm")))
    assert qk == (0 if model_type == "gemma2" else
                  (4 * (a + g) * d * 2 + 4 * (a + g)) * s * b + 2 * 4 * d)
    assert [per_layer[i] for i in range(1, LAYERS)] == [layer.bytes] * (LAYERS - 1)
    rope = 2 * s * d * e  # one table: every layer here is of one type
    assert per_layer[0] == per_layer[1] + rope
    assert outside + rope == head


QK_NORM_MODELS = {
    # Qwen3: one RMSNorm weight of head_dim shared by the heads, applied per head
    "qwen3": dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                  intermediate_size=256, num_hidden_layers=LAYERS, vocab_size=VOCAB,
                  tie_word_embeddings=False, attention_bias=False),
}


@pytest.mark.parametrize("model_type", list(QK_NORM_MODELS))
@pytest.mark.parametrize("impl,dtype", [("eager", "bfloat16"), ("sdpa", "bfloat16"),
                                        ("sdpa", "float32")])
def test_qk_norms_keep_an_rmsnorms_tensors_per_head(model_type, impl, dtype):
    config = dict(QK_NORM_MODELS[model_type], model_type=model_type)
    spec = spec_from_hf_config(config)
    torch_dtype = getattr(torch, dtype)
    e = torch.tensor([], dtype=torch_dtype).element_size()
    b, s = 2, 16
    per_layer, outside, _ = kept_bytes(config, impl, torch_dtype, b, s, False)
    layer = layer_activations(spec, b, s, convention=f"hf-{impl}", act_bytes=e)
    head = output_activations(spec, b, s, convention=f"hf-{impl}", act_bytes=e).bytes
    a, g, d = 4, 2, 32
    # by hand: per head, the fp32 input copy (in an fp32 model the projection's output itself,
    # which the norm keeps), the fp32 rsqrt and the normalised output
    qk = sum(t.bytes for t in layer.saved if t.name.startswith(("Q norm", "K norm")))
    assert qk == (4 * (a + g) * d + 4 * (a + g) + e * (a + g) * d) * s * b
    assert [per_layer[i] for i in range(1, LAYERS)] == [layer.bytes] * (LAYERS - 1)
    rope = 2 * s * d * e
    assert per_layer[0] == per_layer[1] + rope
    assert outside + rope == head


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_gemma2_soft_capping_keeps_the_tanh_outputs(dtype):
    """Gemma 2 (eager) soft-caps the scores and the final logits as cap·tanh(x/cap): each tanh
    keeps its output, a·s²·b per layer and s·b·V once, in the model's dtype."""
    config = dict(GEMMA, model_type="gemma2", attn_logit_softcapping=50.0,
                  final_logit_softcapping=30.0)
    spec = spec_from_hf_config(config)
    torch_dtype = getattr(torch, dtype)
    e = torch.tensor([], dtype=torch_dtype).element_size()
    b, s, a, d = 2, 16, 4, 24
    per_layer, outside, _ = kept_bytes(config, "eager", torch_dtype, b, s, False)
    layer = layer_activations(spec, b, s, convention="hf-eager", act_bytes=e)
    head = output_activations(spec, b, s, convention="hf-eager", act_bytes=e).bytes
    uncapped = spec_from_hf_config(dict(config, attn_logit_softcapping=None,
                                        final_logit_softcapping=None))
    assert layer.bytes - layer_activations(uncapped, b, s, convention="hf-eager",
                                           act_bytes=e).bytes == e * a * s * s * b
    assert head - output_activations(uncapped, b, s, convention="hf-eager",
                                     act_bytes=e).bytes == e * s * b * VOCAB
    assert [per_layer[i] for i in range(1, LAYERS)] == [layer.bytes] * (LAYERS - 1)
    assert outside + 2 * s * d * e == head

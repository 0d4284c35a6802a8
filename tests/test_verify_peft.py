"""Trainable parameters of LoRA/DoRA against PEFT itself.

Every catalog architecture is built by Hugging Face `transformers` on PyTorch's `meta` device
(no memory, no weights), wrapped by `peft.get_peft_model` with a `LoraConfig`, and the parameters
with `requires_grad` counted; llmsizer's count from the op graph must be equal, for `all-linear`
and for the attention projections alone. Large models are shrunk to a few layers (the count is
per layer; the layer kinds are kept), as are the PEFT variants the catalog does not exercise.
"""

import copy
import warnings

import pytest

from llmsizer.analysis.finetune_targets import adapters, hf_modules, trainable_params
from llmsizer.catalog import list_models
from llmsizer.errors import SpecError
from llmsizer.specs.hf import spec_from_hf_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

pytestmark = pytest.mark.verify

from test_verify_transformers import NEW_VARIANTS, VARIANTS, WRAPPED, hf_model  # noqa: E402

LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")


def shrink(config: dict, layers: int = 4) -> dict:
    """The same architecture with fewer layers (layer-type lists, dense-layer prefixes and MoE
    steps kept consistent), so that 60 catalog models build in seconds."""
    c = copy.deepcopy(config)
    inner = c.get("text_config") if isinstance(c.get("text_config"), dict) else c
    for key in LAYER_KEYS:
        if key in inner and inner[key] > layers:
            inner[key] = layers
            if isinstance(inner.get("layer_types"), list):
                inner["layer_types"] = inner["layer_types"][:layers]
            for k in ("mlp_only_layers", "no_rope_layers"):
                if isinstance(inner.get(k), list):
                    inner[k] = [i for i in inner[k] if i < layers] if k != "no_rope_layers" \
                        else inner[k][:layers]
            if inner.get("first_k_dense_replace", 0) >= layers:
                inner["first_k_dense_replace"] = 1
    for key in ("num_nextn_predict_layers", "mtp_num_hidden_layers"):
        inner.pop(key, None)
    return c


def model_type(config: dict) -> str:
    if config["model_type"] in WRAPPED and "text_config" in config:
        return config["text_config"].get("model_type", WRAPPED[config["model_type"]])
    return config["model_type"]


def peft_trainable(config: dict, targets, rank: int, dora: bool = False) -> int:
    model = hf_model(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = peft.get_peft_model(model, peft.LoraConfig(
            r=rank, lora_alpha=2 * rank, target_modules=targets, use_dora=dora))
    return sum(p.numel() for p in wrapped.parameters() if p.requires_grad)


def attention_targets(spec, mt: str) -> list[str]:
    """The leaf names holding Q and V (fused ones hold both), as a user would write them."""
    leaves = [m.leaf for m in hf_modules(spec, mt)
              if any(c in ("attention.q_proj", "attention.v_proj", "attention.q_b_proj",
                           "attention.kv_b_proj", "mixer.in_proj", "mixer.in_proj_qkvz")
                     for c in m.ops)]
    return sorted(set(leaves))


def check(config: dict, rank: int = 8) -> None:
    spec = spec_from_hf_config(config)
    mt = model_type(config)
    targets = "all-linear"
    if mt in ("mamba", "falcon_mamba", "mamba2"):  # PEFT refuses all-linear (out_proj) here
        targets = ["in_proj", "x_proj", "dt_proj"] if mt != "mamba2" else ["in_proj"]
    ours = trainable_params(spec, mt, ("all-linear",) if targets == "all-linear"
                            else tuple(targets), rank)
    assert ours == peft_trainable(config, targets, rank)
    attn = attention_targets(spec, mt)
    assert trainable_params(spec, mt, tuple(attn), rank) == peft_trainable(config, attn, rank)


@pytest.mark.parametrize("entry", list_models(), ids=lambda e: e.name)
def test_catalog_trainable_params_match_peft(entry):
    check(shrink(entry.config))


@pytest.mark.parametrize("name", sorted(set(VARIANTS) | set(NEW_VARIANTS)))
def test_variant_trainable_params_match_peft(name):
    check({**VARIANTS, **NEW_VARIANTS}[name], rank=4)


def test_full_size_llama_3_8b_matches_peft():
    entry = next(e for e in list_models() if e.name == "llama-3-8b")
    # 8,030,261,248 parameters; r = 16 on all seven projections of 32 layers: 41,943,040
    assert check(entry.config, rank=16) is None
    spec = entry.spec()
    assert trainable_params(spec, "llama", ("all-linear",), 16) == 32 * 16 * (
        (4096 + 4096) + (4096 + 1024) * 2 + (4096 + 4096) + (4096 + 14336) * 2 + (14336 + 4096))


def test_dora_adds_one_magnitude_per_output_feature_like_peft():
    config = VARIANTS["llama-all-biases"]
    spec = spec_from_hf_config(config)
    for targets in ("all-linear", ["q_proj", "v_proj"]):
        ours = trainable_params(spec, "llama", ("all-linear",) if targets == "all-linear"
                                else tuple(targets), 4, dora=True)
        assert ours == peft_trainable(config, targets, 4, dora=True)


def test_qwen2_pattern_moe_converts_expert_targets_like_peft():
    # transformers 5 stacks the experts; PEFT 0.21 wraps the stacked tensors with rank 2r on
    # gate_up_proj, and the names it converts no longer select the dense/shared MLPs.
    config = NEW_VARIANTS["deepseek-v3-mla-moe"]
    spec = spec_from_hf_config(config)
    ours = {a.module.leaf: a.rank for a in adapters(spec, "deepseek_v3", ("all-linear",), 4)}
    assert ours["gate_up_proj"] == 8 and ours["down_proj"] == 4


def test_unknown_target_names_the_flag():
    spec = spec_from_hf_config(VARIANTS["llama-all-biases"])
    with pytest.raises(SpecError, match="lora_targets"):
        trainable_params(spec, "llama", ("c_attn",), 8)


# ---------------------------------------------------------------------------------------------
# Activation bytes with LoRA against what PyTorch keeps for backward
# ---------------------------------------------------------------------------------------------

H, HEADS, HEAD_DIM, FFN, VOCAB, LAYERS = 256, 8, 32, 688, 1000, 3


def lora_kept_bytes(impl, dtype, batch, seq, targets, rank):
    """Bytes saved for backward per layer and outside the layers, PEFT LoRA on a tiny Llama."""
    import collections

    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model(
        "llama", hidden_size=H, num_attention_heads=HEADS, num_key_value_heads=2,
        head_dim=HEAD_DIM, intermediate_size=FFN, vocab_size=VOCAB, num_hidden_layers=LAYERS,
        attention_dropout=0.0, tie_word_embeddings=False)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=impl,
                                                          dtype=dtype).train()
    model = peft.get_peft_model(model, peft.LoraConfig(r=rank, target_modules=targets,
                                                       lora_dropout=0.0))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    names = {m: n for n, m in model.named_modules()}
    where = ["outside"]
    for m in model.modules():
        m.register_forward_pre_hook(lambda mod, a: where.append(names[mod]))
        m.register_forward_hook(lambda mod, a, o: where.pop() and None)
    seen: set[int] = set()
    per_layer: collections.Counter = collections.Counter()
    outside = 0

    def pack(t):
        nonlocal outside
        s = t.untyped_storage()
        if s.data_ptr() in params or s.data_ptr() in seen or s.nbytes() == 0:
            return t
        seen.add(s.data_ptr())
        name = where[-1]
        if ".layers." in name:
            per_layer[int(name.split(".layers.")[1].split(".")[0])] += s.nbytes()
        else:
            outside += s.nbytes()
        return t

    ids = torch.randint(0, VOCAB, (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return per_layer, outside


@pytest.mark.parametrize("impl,dtype,targets", [
    ("sdpa", "bfloat16", "all-linear"), ("sdpa", "float32", "all-linear"),
    ("eager", "bfloat16", ["q_proj", "v_proj"]), ("sdpa", "float32", ["q_proj", "v_proj"]),
    ("eager", "float32", ["o_proj", "down_proj", "gate_proj"]),
])
def test_lora_activation_bytes_match_saved_tensors(impl, dtype, targets):
    from llmsizer.analysis.finetune import lora_layer_bytes, lora_output_bytes

    config = dict(model_type="llama", hidden_size=H, num_attention_heads=HEADS,
                  num_key_value_heads=2, head_dim=HEAD_DIM, intermediate_size=FFN,
                  vocab_size=VOCAB, num_hidden_layers=LAYERS, tie_word_embeddings=False)
    spec = spec_from_hf_config(config)
    e = 2 if dtype == "bfloat16" else 4
    batch, seq, rank = 2, 64, 8
    per_layer, outside = lora_kept_bytes(impl, getattr(torch, dtype), batch, seq, targets, rank)
    t = ("all-linear",) if targets == "all-linear" else tuple(targets)
    ads = adapters(spec, "llama", t, rank)
    ours = [lora_layer_bytes(spec, i, ads, batch, seq, f"hf-{impl}", e, "none")
            for i in range(LAYERS)]
    # The rotary cos/sin are first saved inside the first layer whose Q needs a gradient;
    # llmsizer books them outside the layers.
    rope = 2 * seq * HEAD_DIM * e
    first = 0 if "q_proj" in targets or targets == "all-linear" else 1
    measured = [per_layer[i] - (rope if i == first else 0) for i in range(LAYERS)]
    assert measured[1:] == ours[1:]
    if targets == "all-linear":
        # The first layer: no gradient reaches its input from the frozen embedding. (With only
        # some projections adapted, more of its tensors need no gradient: not modelled.)
        assert measured[0] == ours[0]
    assert outside + rope == lora_output_bytes(spec, batch, seq, f"hf-{impl}", e, "none")

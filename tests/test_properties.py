"""Invariants that hold for every architecture (Hypothesis)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from llmsizer import ModelSpec, MoESpec, count_params
from llmsizer.analysis.params import shard_params


@st.composite
def specs(draw):
    tp_unit = draw(st.sampled_from([1, 2, 4, 8]))
    kv = draw(st.sampled_from([1, 2, 4, 8]))
    heads = kv * draw(st.sampled_from([1, 2, 4]))
    head_dim = draw(st.sampled_from([8, 16, 32]))
    hidden = heads * head_dim * draw(st.sampled_from([1, 2]))
    layers = draw(st.integers(1, 12))
    ffn = tp_unit * 8 * draw(st.integers(1, 16))
    moe = None
    if draw(st.booleans()):
        experts = draw(st.sampled_from([2, 4, 8]))
        moe = MoESpec(
            num_experts=experts,
            top_k=draw(st.integers(1, experts)),
            expert_ffn_size=8 * draw(st.integers(1, 8)),
            moe_layers=tuple(i for i in range(layers) if draw(st.booleans())),
            shared_experts=draw(st.integers(0, 2)),
            shared_expert_ffn_size=64,
        )
    return ModelSpec(
        name="random", num_layers=layers, hidden_size=hidden, num_heads=heads, num_kv_heads=kv,
        head_dim=head_dim, vocab_size=draw(st.integers(8, 1000)), ffn_size=ffn,
        ffn_kind=draw(st.sampled_from(["mlp", "gated"])),
        tie_embeddings=draw(st.booleans()),
        norm=draw(st.sampled_from(["layernorm", "rmsnorm"])), norm_bias=draw(st.booleans()),
        qkv_bias=draw(st.booleans()), out_bias=draw(st.booleans()), mlp_bias=draw(st.booleans()),
        moe=moe,
    )


@given(specs())
@settings(max_examples=150, deadline=None)
def test_breakdown_groups_and_layers_add_up(spec):
    c = count_params(spec)
    assert sum(c.breakdown.values()) == c.total
    assert sum(c.groups.values()) == c.total
    assert c.embedding + c.non_embedding == c.total
    assert c.explanation.value == c.total
    assert 0 < c.active <= c.total
    assert (c.active == c.total) == (spec.moe is None or not spec.moe.moe_layers
                                     or spec.moe.top_k == spec.moe.num_experts)


@given(specs(), st.sampled_from([1, 2, 4, 8]))
@settings(max_examples=150, deadline=None)
def test_tensor_shards_add_up_to_the_total_plus_replicas(spec, tp):
    if spec.num_heads % tp or (spec.kv_heads % tp and tp % spec.kv_heads):
        return
    if spec.ffn_size % tp or (spec.moe and (spec.moe.expert_ffn_size % tp
                                            or spec.moe.shared_expert_ffn_size % tp)):
        return
    if spec.vocab_size % tp:
        return
    if spec.kv_heads < tp:  # K/V heads replicated: covered by a hand-worked test
        return
    total = count_params(spec).total
    shards = shard_params(spec, tp=tp)
    per_rank, replicated = shards.per_stage[0], shards.replicated_per_stage[0]
    # Every rank holds 1/tp of what is split plus all of what is replicated (norms, row-parallel
    # biases, the router).
    assert tp * (per_rank - replicated) + replicated == total


@given(specs(), st.integers(1, 12))
@settings(max_examples=150, deadline=None)
def test_pipeline_stages_add_up_to_the_total(spec, pp):
    if pp > spec.num_layers:
        return
    total = count_params(spec).total
    shards = shard_params(spec, pp=pp)
    tied_copy = spec.vocab_size * spec.hidden_size if (spec.tie_embeddings and pp > 1) else 0
    assert sum(shards.per_stage) == total + tied_copy
    assert sum(len(s) for s in shards.stage_layers) == spec.num_layers


@given(specs(), st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 4]))
@settings(max_examples=100, deadline=None)
def test_more_sharding_never_holds_more_per_device(spec, tp, pp):
    try:
        a = shard_params(spec, tp=tp, pp=pp).max_per_device
        b = shard_params(spec, tp=tp * 2, pp=pp).max_per_device
    except ValueError:
        return
    assert b <= a


# ---- physical invariants of the analyses (issue 14) -----------------------------------------

from hypothesis import HealthCheck  # noqa: E402

from llmsizer.analysis.cluster import Cluster  # noqa: E402
from llmsizer.analysis.memory import training_memory  # noqa: E402
from llmsizer.analysis.training import train_step  # noqa: E402
from llmsizer.catalog import get_accelerator  # noqa: E402
from llmsizer.report_training import check_training  # noqa: E402
from llmsizer.specs.parallel import Parallelism  # noqa: E402
from llmsizer.specs.precision import optimizer, training_precision  # noqa: E402

RECIPES = ["mixed", "mixed-fp16", "bf16", "fp32"]
OPTIMIZERS = ["adam", "adamw", "adam-8bit", "sgd-momentum"]


@given(specs(), st.sampled_from([2, 4, 8, 64]), st.sampled_from([128, 1024, 4096]),
       st.sampled_from(RECIPES), st.sampled_from(OPTIMIZERS), st.sampled_from(["none", "full"]))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_more_zero_sharding_never_uses_more_memory_per_device(spec, dp, seq, recipe, opt, rec):
    # The framework's reduce buckets are left out: DeepSpeed's ZeRO-1/2 bucket holds up to 5e8
    # elements (the whole model when smaller), torch DDP's two 25 MiB; for a small model with a
    # cheap optimizer (fp32 weights, 8-bit Adam) ZeRO-1's bigger bucket really does outweigh what
    # it shards. Sharding itself never adds.
    precision, o = training_precision(recipe), optimizer(opt)
    peaks = []
    for zero in range(4):
        par = Parallelism(dp=dp, zero=zero, recompute=rec)
        peak = training_memory(spec, par, precision, o, seq).peak
        peaks.append(peak.total - peak.other_parts.get("gradient buckets", 0.0))
    assert all(b <= a for a, b in zip(peaks, peaks[1:], strict=False)), peaks
    assert all(p > 0 for p in peaks)


@given(specs(), st.sampled_from([1, 2, 8]), st.sampled_from([1, 2, 4]),
       st.sampled_from([64, 512, 2048]), st.sampled_from(["dense", "causal"]),
       st.sampled_from(["none", "selective", "full"]), st.integers(0, 3),
       st.sampled_from(["h100", "a100", "mi300x"]))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_training_result_is_physically_possible(spec, dp, mb, seq, convention, rec, zero,
                                                      gpu):
    """Utilisation ≤ 100 %, times > 0, bytes ≥ 0 (check_training asserts each)."""
    if dp == 1:
        zero = 0
    acc = get_accelerator(gpu)
    par = Parallelism(dp=dp, zero=zero, recompute=rec, micro_batch=mb, grad_accum=2)
    r = train_step(spec, par, training_precision("mixed"), optimizer("adam"), seq, Cluster(acc),
                   mfu_attention=convention)
    check_training(r)
    assert 0 < r.mfu <= r.hfu <= 1 or rec == "none" and r.mfu <= 1


# ---- serving: every answer physically possible, for old and new architectures -------------------



from llmsizer import get_model  # noqa: E402
from llmsizer.analysis.inference import ServingConfig, serve, weight_bytes_per_device  # noqa: E402
from llmsizer.analysis.kvcache import KVCache  # noqa: E402
from llmsizer.analysis.params import validate_parallel  # noqa: E402
from llmsizer.errors import SpecError  # noqa: E402
from llmsizer.report_inference import check_serving  # noqa: E402
from llmsizer.specs.precision import weight_format  # noqa: E402

SERVED = ["llama-3-8b", "mixtral-8x7b", "deepseek-v2-lite", "gpt-oss-20b", "gemma-3-1b",
          "qwen3-next-80b-a3b", "falcon3-mamba-7b-base", "qwen3-30b-a3b", "olmo-2-7b"]


@given(st.sampled_from(SERVED), st.sampled_from([1, 2, 4, 8]), st.integers(1, 256),
       st.integers(1, 8192), st.integers(1, 2048), st.sampled_from(["bf16", "fp8", "int4"]),
       st.sampled_from([2, 1]), st.sampled_from(["h100", "a100", "mi300x", "l4"]),
       st.booleans())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_serving_result_is_physically_possible(name, tp, batch, prompt, output, weights,
                                                     kv_bytes, gpu, absorb):
    spec, acc = get_model(name), get_accelerator(gpu)
    try:
        validate_parallel(spec, tp)
    except SpecError:
        return
    fmt = weight_format(weights)
    if fmt.compute_dtype not in acc.peak_flops:
        fmt = weight_format("bf16") if "bf16" in acc.peak_flops else weight_format("fp16")
    cfg = ServingConfig(tp=tp, weights=fmt, kv_dtype_bytes=kv_bytes, mla_absorb=absorb)
    r = serve(spec, acc, cfg, batch=batch, prompt=prompt, output=output)
    check_serving(r)  # times > 0 and finite, bytes >= 0, no pass beats the peak
    assert r.e2e_latency_s >= r.ttft_s
    assert r.max_concurrency >= 0


@given(st.sampled_from(SERVED), st.integers(1, 200000))
@settings(max_examples=60, deadline=None)
def test_more_tensor_parallelism_never_holds_more_per_device(name, tokens):
    spec = get_model(name)
    tps = []
    for tp in (1, 2, 4, 8):
        try:
            validate_parallel(spec, tp)
        except SpecError:
            continue
        tps.append(tp)
    weights = [weight_bytes_per_device(spec, ServingConfig(tp=tp)) for tp in tps]
    caches = [KVCache(spec, 2, tp=tp).bytes_for(tokens) for tp in tps]
    assert weights == sorted(weights, reverse=True)
    assert caches == sorted(caches, reverse=True)


@given(st.sampled_from(SERVED), st.integers(1, 100000), st.integers(1, 100000))
@settings(max_examples=60, deadline=None)
def test_a_longer_sequence_never_needs_less_cache(name, a, b):
    kv = KVCache(get_model(name), 2)
    lo, hi = sorted((a, b))
    assert kv.bytes_for(lo) <= kv.bytes_for(hi)

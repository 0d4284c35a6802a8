"""Framework-aware planning: only layouts the framework runs, exported exactly as planned.

Every export is read back (DeepSpeed by its own config class; Megatron-LM flags by an argparse
parser declaring them as megatron/training/arguments.py does; torchtitan's TOML by tomllib; the
accelerate FSDP file as YAML) and must agree with the plan; a layout the framework cannot run is
refused, never replaced by a nearby one.
"""

import argparse
import json

import pytest
import tomllib

from llmsizer.analysis import step
from llmsizer.analysis.cluster import Cluster
from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.planner import FRAMEWORKS, SearchSpace, search
from llmsizer.catalog import get_accelerator, get_model
from llmsizer.cli import main
from llmsizer.cli_plan import export_training
from llmsizer.errors import SpecError
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import optimizer, training_precision

MIXED = training_precision("mixed")
SPEC = get_model("llama-2-70b")
SETTING = step.Setting(SPEC, 4096, MIXED, optimizer("adam"), Cluster(get_accelerator("a100")),
                       Efficiency())


def plans(fw: str, gpus: int = 64, batch: int = 256, top: int = 30):
    space = SearchSpace(gpus=gpus, global_batch=batch, framework=FRAMEWORKS[fw])
    return search(SETTING, space, top=top).ranked


@pytest.mark.parametrize("fw", sorted(FRAMEWORKS))
def test_every_ranked_layout_is_one_the_framework_runs(fw):
    f = FRAMEWORKS[fw]
    ranked = plans(fw)
    assert ranked
    for c in ranked:
        p = c.par
        assert p.zero in (f.zero_stages_with_pp if p.pp > 1 else f.zero_stages)
        assert (p.tp == 1 or f.tp) and (p.pp == 1 or f.pp) and (p.cp == 1 or f.cp)
        assert (p.ep == 1 or f.ep)
        assert ("optimizer" in p.offload, "params" in p.offload) in f.offload
        assert {"gpipe": 0, "1f1b": 1, "interleaved": 2}[p.schedule] in f.schedules


def test_megatron_never_gets_zero_2_or_3():
    assert all(c.par.zero <= 1 and not c.par.offload for c in plans("megatron"))


def test_deepspeed_pipeline_layouts_use_zero_0_or_1():
    ranked = plans("deepspeed", gpus=16, batch=64)
    assert all(c.par.zero <= 1 for c in ranked if c.par.pp > 1)


# --- Megatron-LM: the flags as megatron/training/arguments.py declares them -----------------

def megatron_parser() -> argparse.ArgumentParser:
    """The subset of Megatron-LM's arguments llmsizer writes, with their documented types
    (megatron/training/arguments.py: _add_network_size_args, _add_distributed_args,
    _add_training_args, _add_mixed_precision_args)."""
    p = argparse.ArgumentParser(allow_abbrev=False)
    for flag in ("--num-layers", "--hidden-size", "--num-attention-heads", "--ffn-hidden-size",
                 "--seq-length", "--max-position-embeddings", "--tensor-model-parallel-size",
                 "--pipeline-model-parallel-size", "--micro-batch-size", "--global-batch-size",
                 "--kv-channels", "--num-query-groups", "--context-parallel-size",
                 "--expert-model-parallel-size", "--num-experts", "--moe-router-topk",
                 "--num-layers-per-virtual-pipeline-stage", "--recompute-num-layers"):
        p.add_argument(flag, type=int)
    for flag in ("--group-query-attention", "--swiglu", "--untie-embeddings-and-output-weights",
                 "--disable-bias-linear", "--sequence-parallel", "--use-distributed-optimizer",
                 "--bf16", "--fp16", "--accumulate-allreduce-grads-in-fp32"):
        p.add_argument(flag, action="store_true")
    p.add_argument("--normalization", choices=["LayerNorm", "RMSNorm"])
    p.add_argument("--position-embedding-type", choices=["learned_absolute", "rope", "none"])
    p.add_argument("--recompute-granularity", choices=["full", "selective"])
    p.add_argument("--recompute-method", choices=["uniform", "block"])
    return p


@pytest.mark.parametrize("fw", ["megatron", "nemo"])
def test_megatron_export_round_trips(fw):
    best = plans(fw)[0].par
    text, _ = export_training("megatron", SPEC, best, MIXED, 4096, 8)
    a = megatron_parser().parse_args(text.replace("\\\n", " ").split())
    dp = 64 // (a.tensor_model_parallel_size * a.pipeline_model_parallel_size
                * (a.context_parallel_size or 1))
    assert (a.tensor_model_parallel_size, a.pipeline_model_parallel_size) == (best.tp, best.pp)
    assert (a.context_parallel_size or 1) == best.cp and dp == best.dp
    assert a.micro_batch_size == best.micro_batch and a.global_batch_size == best.global_batch
    assert a.use_distributed_optimizer == (best.zero == 1)
    assert a.sequence_parallel == best.sequence_parallel
    if best.schedule == "interleaved":
        assert a.num_layers_per_virtual_pipeline_stage * best.pp * best.virtual_stages == 80
    assert (a.recompute_granularity or "none") == best.recompute


@pytest.mark.parametrize("par", [Parallelism(dp=8, zero=2), Parallelism(dp=8, zero=3),
                                 Parallelism(dp=8, zero=1, offload=frozenset({"optimizer"}))])
def test_megatron_export_refuses_what_megatron_cannot_run(par):
    with pytest.raises(SpecError, match="export"):
        export_training("megatron", SPEC, par, MIXED, 4096, 8)


# --- DeepSpeed: its own config parser -----------------------------------------------------------

def test_deepspeed_export_round_trips(monkeypatch):
    ds_config = pytest.importorskip("deepspeed.runtime.config")
    monkeypatch.setattr(ds_config.dist, "get_rank", lambda: 0)
    for c in plans("deepspeed", gpus=16, batch=64, top=5):
        par = c.par
        text, _ = export_training("deepspeed", SPEC, par, MIXED, 4096, 8)

        class Mpu:
            def __init__(self, dp):
                self.dp = dp

            def get_data_parallel_world_size(self):
                return self.dp

        parsed = ds_config.DeepSpeedConfig(json.loads(text), mpu=Mpu(par.dp))
        assert parsed.zero_optimization_stage == par.zero
        assert parsed.train_batch_size == par.global_batch
        assert parsed.train_micro_batch_size_per_gpu == par.micro_batch
        assert parsed.gradient_accumulation_steps == par.grad_accum
        off = parsed.zero_config.offload_optimizer
        assert (off is not None and str(off.device).endswith("cpu")) == \
            ("optimizer" in par.offload)


def test_deepspeed_export_refuses_zero_2_with_its_pipeline_engine():
    with pytest.raises(SpecError, match="pipeline engine"):
        export_training("deepspeed", SPEC, Parallelism(dp=4, pp=2, zero=2), MIXED, 4096, 8)


# --- FSDP2 (accelerate) and torchtitan -----------------------------------------------------------

def test_accelerate_fsdp_export_round_trips():
    yaml = pytest.importorskip("yaml")
    best = plans("fsdp2")[0].par
    text, _ = export_training("accelerate", SPEC, best, MIXED, 4096, 8)
    cfg = yaml.safe_load(text)
    assert cfg["num_processes"] == best.dp and cfg["distributed_type"] == "FSDP"
    strategy = {0: "NO_SHARD", 2: "SHARD_GRAD_OP", 3: "FULL_SHARD"}[best.zero]
    assert cfg["fsdp_config"]["fsdp_sharding_strategy"] == strategy
    assert cfg["fsdp_config"]["fsdp_offload_params"] == bool(best.offload)
    assert cfg["fsdp_config"]["fsdp_activation_checkpointing"] == (best.recompute == "full")


def test_torchtitan_export_round_trips():
    best = plans("torchtitan")[0].par
    text, _ = export_training("torchtitan", SPEC, best, MIXED, 4096, 8)
    cfg = tomllib.loads(text)
    p = cfg["parallelism"]
    assert p["data_parallel_replicate_degree"] * p["data_parallel_shard_degree"] == best.dp
    assert (p["tensor_parallel_degree"], p["pipeline_parallel_degree"],
            p["context_parallel_degree"]) == (best.tp, best.pp, best.cp)
    assert cfg["training"]["global_batch_size"] == best.global_batch
    assert cfg["activation_checkpoint"]["mode"] == best.recompute


def test_export_kind_must_match_the_framework(capsys):
    code = main(["plan", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--seq", "2048",
                 "--global-batch", "32", "--framework", "megatron", "--export", "deepspeed"])
    err = capsys.readouterr().err
    assert code == 2 and "--export" in err and err.count("\n") == 1


def test_unknown_framework_names_the_flag(capsys):
    code = main(["plan", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--seq", "2048",
                 "--global-batch", "32", "--framework", "jax"])
    err = capsys.readouterr().err
    assert code == 2 and "--framework" in err

"""`llmsizer finetune`: bitsandbytes storage, adapter-only optimizer state, single-GPU ZeRO-Offload,
suggestions, exports that PEFT / transformers / DeepSpeed accept."""

import json

import pytest

from llmsizer.analysis.cluster import Cluster
from llmsizer.analysis.finetune import FineTune, finetune, frozen_weight_bytes
from llmsizer.catalog import get_accelerator, get_model
from llmsizer.cli import main
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import frozen_format, optimizer, training_precision

MIXED = training_precision("mixed")
GiB = 2**30


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_nf4_tensor_bytes_follow_bitsandbytes_storage():
    # bitsandbytes/functional.py quantize_4bit: 4096·4096 weights packed two per byte; 262,144
    # blocks of 64 with an absmax each, double-quantized to uint8 in blocks of 256 (1,024 fp32
    # nested absmax) plus the fp32 mean; a 16-entry fp32 code table per QuantState.
    n = 4096 * 4096
    expected = n // 2 + n // 64 + 4 * (n // 64 // 256) + 4 + 64
    assert frozen_format("nf4").tensor_bytes(4096, 4096) == expected
    # without double quantization the absmax stay fp32
    assert frozen_format("nf4", double_quant=False).tensor_bytes(4096, 4096) == \
        n // 2 + 4 * (n // 64) + 64
    # LLM.int8: int8 weights + an fp32 absmax per output row (Int8Params CB/SCB)
    assert frozen_format("int8").tensor_bytes(1024, 4096) == 1024 * 4096 + 4 * 1024


def test_odd_sizes_round_blocks_up():
    f = frozen_format("fp4")
    # 3·65 = 195 elements: 98 packed bytes, 4 blocks, 1 nested block
    assert f.tensor_bytes(3, 65) == 98 + 4 + 4 + 4 + 64


def test_qlora_keeps_embeddings_and_head_in_16_bit():
    spec = get_model("llama-3-8b")
    total, quant = frozen_weight_bytes(spec, frozen_format("nf4"))
    # embed_tokens and lm_head: 2 · 128,256 · 4,096 bf16; norms: (2·32 + 1) · 4,096 bf16
    sixteen_bit = 2 * (2 * 128256 * 4096) + 2 * 65 * 4096
    assert total - quant == sixteen_bit


def test_adapters_get_gradients_and_optimizer_states_only():
    spec = get_model("llama-3-8b")
    r = finetune(spec, FineTune.of("lora"), Parallelism(recompute="full"), MIXED,
                 optimizer("adamw"), 2048, Cluster(get_accelerator("a100-80gb")))
    assert r.trainable_params == 41_943_040
    assert r.memory["gradients"] == 4 * r.trainable_params
    assert r.memory["optimizer"] == 8 * r.trainable_params
    assert r.memory["total"] == pytest.approx(sum(
        r.memory[k] for k in ("weights", "gradients", "optimizer", "activations", "other")))


def test_qlora_uses_less_memory_and_more_time_than_lora():
    spec = get_model("llama-3-8b")
    cl = Cluster(get_accelerator("rtx4090"))
    args = (Parallelism(recompute="full"), MIXED, optimizer("adamw"), 2048, cl)
    lora = finetune(spec, FineTune.of("lora"), *args)
    qlora = finetune(spec, FineTune.of("qlora"), *args)
    assert qlora.memory["weights"] < lora.memory["weights"] / 2
    assert qlora.step_parts_s["dequantize"] > 0 and qlora.step_time_s > lora.step_time_s


def test_full_finetuning_offloads_the_optimizer_on_one_gpu():
    spec = get_model("llama-3-8b")
    par = Parallelism(dp=1, zero=2, offload=frozenset({"optimizer"}), recompute="full")
    r = finetune(spec, FineTune.of("full"), par, MIXED, optimizer("adamw"), 2048,
                 Cluster(get_accelerator("a100-80gb")))
    assert r.fits and r.memory["optimizer"] == 0
    # 12 bytes of fp32 master + Adam moments and the 2-byte gradients per parameter go to host
    assert r.host_bytes == pytest.approx(14 * 8_030_261_248)


def test_cli_json_has_the_keys(capsys):
    code, out, _ = run(capsys, "finetune", "llama-3-8b", "--gpu", "rtx4090", "--method", "qlora",
                       "--recompute", "full", "--tokens", "100M", "--json")
    d = json.loads(out)
    assert code == 0 and d["fits"]
    for key in ("trainable_params", "memory_per_device", "fits", "step_time_s",
                "time_to_train_s"):
        assert key in d
    assert set(d["memory_per_device"]) >= {"weights", "gradients", "optimizer", "activations",
                                           "other", "total"}


def test_too_small_gpu_suggests_in_practitioner_order(capsys):
    code, out, _ = run(capsys, "finetune", "llama-3-8b", "--gpu", "a100-80gb", "--method",
                       "full", "--micro-batch", "4", "--json")
    d = json.loads(out)
    assert code == 3 and not d["fits"]
    changes = [s["change"] for s in d["suggestions"]]
    order = ["--micro-batch 1", "--recompute full", "--optimizer paged-adamw-8bit",
             "--method lora", "--method qlora", "--zero 2 --offload optimizer"]
    assert changes[: len(order)] == order
    assert all("memory_per_device" in s and "step_time_s" in s for s in d["suggestions"])


@pytest.mark.parametrize("argv,flag", [
    (["--method", "qlorra"], "--method"), (["--lora-rank", "0"], "--lora-rank"),
    (["--lora-targets", "c_attn"], "--lora-targets"), (["--optimizer", "lion"], "--optimizer"),
    (["--base-weights", "int3"], "--base-weights"), (["--offload", "gpu"], "--offload"),
])
def test_bad_input_is_one_line_naming_the_flag(capsys, argv, flag):
    code, out, err = run(capsys, "finetune", "llama-3-8b", "--gpu", "a100", *argv)
    assert code == 2 and err.count("\n") == 1 and flag in err


def test_peft_export_builds_loraconfig_and_bitsandbytesconfig(capsys):
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    code, out, _ = run(capsys, "finetune", "llama-3-8b", "--gpu", "rtx4090", "--method", "qlora",
                       "--lora-rank", "8", "--lora-targets", "q_proj,v_proj", "--recompute",
                       "full", "--export", "peft")
    d = json.loads(out)
    cfg = peft.LoraConfig(**d["lora_config"])
    assert cfg.r == 8 and set(cfg.target_modules) == {"q_proj", "v_proj"}
    bnb = transformers.BitsAndBytesConfig(**d["bnb_config"])
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4"
    assert bnb.bnb_4bit_use_double_quant


def test_deepspeed_export_of_single_gpu_offload_parses(capsys, monkeypatch):
    ds_config = pytest.importorskip("deepspeed.runtime.config")
    monkeypatch.setattr(ds_config.dist, "get_rank", lambda: 0)
    capsys.readouterr()  # DeepSpeed's import-time accelerator notice
    code, out, _ = run(capsys, "finetune", "llama-3-8b", "--gpu", "a100-80gb", "--method",
                       "full", "--zero", "2", "--offload", "optimizer", "--recompute", "full",
                       "--export", "deepspeed")

    class OneRank:
        def get_data_parallel_world_size(self):
            return 1

    parsed = ds_config.DeepSpeedConfig(json.loads(out), mpu=OneRank())
    assert parsed.zero_optimization_stage == 2
    assert parsed.zero_config.offload_optimizer.device == "cpu"
    assert parsed.train_batch_size == 1


def test_op_io_features_are_the_whole_widths():
    from llmsizer.graph import build_graph

    ops = {op.name: op for op in build_graph(get_model("llama-3-8b")).layers[0].ops}
    assert ops["k_proj"].io_features() == (4096, 1024)
    assert ops["down_proj"].io_features() == (14336, 4096)

"""The DeepSpeed export, read by DeepSpeed's own configuration parser (CPU install)."""

import pytest

from llmsizer.export import deepspeed_config
from llmsizer.specs.parallel import Parallelism
from llmsizer.specs.precision import training_precision

ds_config = pytest.importorskip("deepspeed.runtime.config")

pytestmark = pytest.mark.verify


class DataParallelOnly:
    """The slice of Megatron's mpu interface DeepSpeedConfig asks for."""

    def __init__(self, dp: int):
        self.dp = dp

    def get_data_parallel_world_size(self) -> int:
        return self.dp


@pytest.mark.parametrize("par", [
    Parallelism(dp=8, zero=0, micro_batch=4, grad_accum=2),
    Parallelism(dp=8, zero=1, micro_batch=2, grad_accum=4, recompute="full"),
    Parallelism(dp=16, zero=2, offload=frozenset({"optimizer"}), micro_batch=1, grad_accum=8),
    Parallelism(dp=4, zero=3, offload=frozenset({"optimizer", "params"}), offload_device="nvme",
                micro_batch=1, grad_accum=1),
], ids=["zero0", "zero1-ckpt", "zero2-offload", "zero3-nvme"])
def test_deepspeed_parses_the_export(monkeypatch, par):
    monkeypatch.setattr(ds_config.dist, "get_rank", lambda: 0)
    cfg, _ = deepspeed_config(par, training_precision("mixed"))
    parsed = ds_config.DeepSpeedConfig(cfg, mpu=DataParallelOnly(par.dp))
    assert parsed.train_batch_size == par.global_batch
    assert parsed.train_micro_batch_size_per_gpu == par.micro_batch
    assert parsed.gradient_accumulation_steps == par.grad_accum
    assert parsed.zero_optimization_stage == par.zero
    assert parsed.bfloat16_config.enabled
    assert parsed.gradient_clipping == 1.0
    if "optimizer" in par.offload:
        assert parsed.zero_config.offload_optimizer.device == par.offload_device
    if "params" in par.offload:
        assert parsed.zero_config.offload_param.device == par.offload_device

"""Configurations people paste: DeepSpeed JSON, Megatron-LM arguments, torchrun, vLLM."""

from llmsizer.export.serving import vllm_args
from llmsizer.export.training import deepspeed_config, megatron_args, torchrun_command

__all__ = ["deepspeed_config", "megatron_args", "torchrun_command", "vllm_args"]

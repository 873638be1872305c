"""The DeepSpeed config a plan runs with. The memory model assumes exactly these settings (buckets sized on
the model, overlap only where DeepSpeed defaults it on), so the trainer must use this and nothing else."""

from typing import Any

from kubetune.api.vocabulary import Offload, Precision, ZeroStage
from kubetune.planner.settings import Optimizer, TrainingSettings


def ds_config(settings: TrainingSettings, learning_rate: float = 2e-4) -> dict[str, Any]:
    buckets = settings.buckets
    zero: dict[str, Any] = {
        "stage": int(settings.zero_stage),
        "reduce_bucket_size": buckets.reduce_bucket_elements,
        "allgather_bucket_size": buckets.allgather_bucket_elements,
        "overlap_comm": buckets.overlaps(settings.zero_stage),
        "contiguous_gradients": True,
    }
    if settings.zero_stage is ZeroStage.PARAMETERS:
        zero |= {
            "stage3_prefetch_bucket_size": buckets.prefetch_bucket_elements,
            "stage3_max_live_parameters": buckets.max_live_parameters,
            "stage3_param_persistence_threshold": buckets.param_persistence_threshold,
            # DeepSpeed's default (1e9 elements) keeps every gathered parameter that the trace uses again within
            # that many elements (partitioned_param_coordinator.py, __params_to_release): at the turn from forward
            # to backward the last layers stay whole, up to 2 GB in bf16 that depend on the layer sizes (measured on
            # the CPU: nearly the whole tiny model). 0 releases each one after use, as the memory and time models
            # count it: the layers are gathered again in backward, one all-gather each as for the others.
            "stage3_max_reuse_distance": 0,
            "sub_group_size": buckets.sub_group_elements,
            # Save a whole 16-bit model at the end rather than only ZeRO shards.
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    if settings.offload is not Offload.NONE:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if settings.offload is Offload.ALL:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    optimizer = ({"type": "AdamW", "params": {"lr": learning_rate, "betas": [0.9, 0.999], "eps": 1e-8,
                                               "weight_decay": 0.0}}
                 if settings.optimizer is Optimizer.ADAMW
                 else {"type": "SGD", "params": {"lr": learning_rate, "momentum": 0.9}})
    return {
        "train_micro_batch_size_per_gpu": settings.micro_batch,
        "gradient_accumulation_steps": settings.gradient_accumulation,
        "train_batch_size": settings.micro_batch * settings.gradient_accumulation * settings.num_gpus,
        **_precision(settings),
        "zero_optimization": zero,
        "optimizer": optimizer,
        "gradient_clipping": 1.0,
        "steps_per_print": 1_000_000,  # the trainer reports progress itself
    }


def _precision(settings: TrainingSettings) -> dict[str, Any]:
    """DeepSpeed's precision settings. Its bf16 mode casts every parameter to bf16 (engine.py,
    _cast_module_mixed_precision), so fp32 LoRA adapters run without it: the trainer loads the frozen model in bf16
    itself (trainer/model_setup.py) and DeepSpeed then trains fp32 parameters with an fp32 optimizer. Pure bf16 is
    bf16_master_weights_and_grads with bf16_optimizer_states, which DeepSpeed accepts at ZeRO 1-3 only
    (runtime/config.py); at ZeRO-0 it runs without a bf16 mode, so torch's AdamW steps on the bf16 weights
    themselves, with bf16 communication (without a bf16 mode DeepSpeed would all-reduce in fp32)."""
    precision = settings.precision
    fp32_adapters = settings.method.trains_adapters and settings.lora.adapters_fp32
    pure_zero0 = precision is Precision.PURE_BF16 and settings.zero_stage is ZeroStage.DISABLED
    bf16: dict[str, Any] = {"enabled": precision.is_bf16 and not fp32_adapters and not pure_zero0}
    if precision is Precision.PURE_BF16 and not pure_zero0:
        bf16 |= {"bf16_master_weights_and_grads": True, "bf16_optimizer_states": True}
    config: dict[str, Any] = {"bf16": bf16, "fp16": {"enabled": precision is Precision.FP16}}
    if pure_zero0:
        config["communication_data_type"] = "bf16"
    return config

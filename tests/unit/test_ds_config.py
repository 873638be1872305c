"""The generated DeepSpeed config carries exactly the settings the memory model assumed."""

from kubetune.api.vocabulary import Offload, Precision, ZeroStage
from kubetune.planner.ds_config import ds_config
from kubetune.planner.settings import Buckets, TrainingSettings


def test_zero3_with_full_offload_and_model_sized_buckets() -> None:
    buckets = Buckets.for_hidden_size(4096)
    settings = TrainingSettings(seq_len=4096, micro_batch=2, gradient_accumulation=4, zero_stage=ZeroStage.PARAMETERS,
                                offload=Offload.ALL, num_gpus=16, gpus_per_node=8, buckets=buckets)
    config = ds_config(settings)
    zero = config["zero_optimization"]
    assert config["train_batch_size"] == 2 * 4 * 16
    assert zero["stage"] == 3 and zero["overlap_comm"] is True
    assert zero["reduce_bucket_size"] == 4096 * 4096
    # Hugging Face's prefetch (0.9 h^2: without it a resumed ZeRO-3 run fails DeepSpeed's trace check), and each
    # gathered parameter released after use.
    assert zero["stage3_prefetch_bucket_size"] > 0
    assert zero["stage3_max_reuse_distance"] == 0
    assert zero["stage3_param_persistence_threshold"] == 40960
    assert zero["offload_param"]["device"] == "cpu" and zero["offload_optimizer"]["device"] == "cpu"


def test_zero2_fp16_without_offload() -> None:
    config = ds_config(TrainingSettings(seq_len=512, zero_stage=ZeroStage.GRADIENTS, precision=Precision.FP16))
    assert config["fp16"]["enabled"] and not config["bf16"]["enabled"]
    assert "offload_optimizer" not in config["zero_optimization"]
    assert config["zero_optimization"]["overlap_comm"] is False

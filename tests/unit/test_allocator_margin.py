"""The fit is decided on what the device reserves: the allocator configuration every training pod runs is the one
the planner's margin was derived for, the margin is what that derivation says, and a plan whose allocated peak fits
but whose reserved peak does not is refused."""


from kubetune.api import contract
from kubetune.api import v1alpha1 as api
from kubetune.api.vocabulary import Attention, Method, Offload, Phase, Precision, ZeroStage
from kubetune.catalog import gpus
from kubetune.catalog.cluster_gpus import node_groups
from kubetune.config import DEFAULT_TRAINER_IMAGE
from kubetune.devcluster import profile
from kubetune.planner import activations, architecture, memory, search
from kubetune.planner.decision import decide
from kubetune.planner.settings import Buckets, TrainingSettings
from kubetune.resources.job import job as job_manifest

MIB = 1024**2
ARCH = architecture.load("Llama-3.1-8B")
PINNED = dict(seq_len=2048, global_batch=1, num_gpus=1, micro_batch=1, method=Method.LORA,
              zero_stage=ZeroStage.GRADIENTS, offload=Offload.NONE, gradient_checkpointing=False,
              attention=Attention.SDPA, precision=Precision.BF16)
SETTINGS = TrainingSettings(seq_len=2048, method=Method.LORA, zero_stage=ZeroStage.GRADIENTS,
                            buckets=Buckets.for_hidden_size(ARCH.hidden_size))


def test_training_pods_run_the_allocator_configuration_the_margin_was_derived_for() -> None:
    spec = api.FineTuneJobSpec.model_validate({"model": {"name": "Qwen/Qwen2.5-0.5B"}, "dataset": {"source": "d"}})
    decision = decide(spec, node_groups(profile.load("default").node_manifests(), []))
    env = job_manifest("q", spec, decision.plan, decision.group, DEFAULT_TRAINER_IMAGE, "tiny-config-0")[
        "spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": contract.ALLOCATOR_CONF_ENV, "value": memory.coefficients().allocator_conf} in env


def test_the_margin_is_one_layer_of_holes_while_activations_are_held_and_each_streams_last_pages() -> None:
    c = memory.coefficients()
    estimate = memory.estimate(ARCH, SETTINGS)
    assert estimate.peak_phase is Phase.BACKWARD_START
    assert estimate.allocator_margin_bytes == activations.layer(ARCH, SETTINGS).total
    pages = c.allocator_streams * (c.allocator_large_page_bytes + c.allocator_small_page_bytes)
    assert estimate.overhead_bytes == c.cuda_context_bytes + pages + memory.kernel_workspace_bytes(ARCH, SETTINGS)


def chosen(capacity_mib: int) -> search.Candidate | None:
    gpu = gpus.by_id("H100-SXM-80GB").model_copy(update={"memory_mib": capacity_mib})
    return search.plan(ARCH, search.Request(**PINNED), [search.GpuPool(gpu=gpu, gpus_per_node=1)]).chosen


def test_a_plan_whose_allocated_peak_fits_but_not_what_the_allocator_reserves_is_refused() -> None:
    """The smallest GPU the pinned job fits: one MiB less holds the chosen plan's allocated peak with room to spare,
    and the plan is refused, because its reserved peak does not fit."""
    low, high = 1024, 80 * 1024  # MiB: nothing fits, something fits
    assert chosen(low) is None and chosen(high) is not None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if chosen(middle) is not None else (middle, high)
    plan = chosen(high)
    assert plan is not None
    usable = (1 - memory.coefficients().fit_headroom_fraction) * MIB
    allocated_and_overhead = plan.memory.total_bytes - plan.memory.allocator_margin_bytes
    assert plan.memory.allocator_margin_bytes > 100 * MIB
    assert allocated_and_overhead + 50 * MIB < low * usable < plan.memory.total_bytes

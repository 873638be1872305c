"""FineTuneJob spec and status. These models are the single source of the CRD schema (crd.py renders them;
`kubetune crd` writes crds/ and the chart's copy). Field descriptions become `kubectl explain` text; CEL
rules sit on the narrowest type they constrain.

Conventions (Kubernetes API conventions): camelCase names, no floats in spec (the learning rate is a
decimal string), CamelCase enum values, units in names, every list and string bounded.
"""

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kubetune.api import contract
from kubetune.api import vocabulary as v

GROUP = "kubetune.io"
VERSION = "v1alpha1"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"

NAME = Annotated[str, Field(min_length=1, max_length=253)]
MAX_NODES = 512
# The LoRA settings' defaults are not in the schema: a default makes `has()` true, and the rule that refuses
# LoRA settings with method Full could no longer tell a user's value from it.
DEFAULT_LORA_RANK = 16
# A FineTuneJob's name starts its children's (controller/children.py): the Service `<name>-workers` must be a
# DNS-1035 label (a letter first, no dots) and the pods' hostnames `<name>-train-<index>` DNS labels of at most
# 63 characters, with up to MAX_NODES - 1 as the index.
MAX_NAME_LENGTH = 63 - len("-train-") - len(str(MAX_NODES - 1))
NAME_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_TOO_LONG = (f"metadata.name must be at most {MAX_NAME_LENGTH} characters: the training pods' hostnames "
                 "(<name>-train-<index>) must fit in 63")
NAME_NOT_A_LABEL = ("metadata.name must be lowercase letters, digits and '-', start with a letter and end with a "
                    "letter or digit (no dots): it names the job's Service, which must be a DNS-1035 label")
NAME_RULES = [{"rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}", "message": NAME_TOO_LONG},
              {"rule": f"self.metadata.name.matches('{NAME_PATTERN}')", "message": NAME_NOT_A_LABEL}]


# The output volume may not be mounted over these (or under them): the image's system folders and Python
# (/opt/venv), and what kubetune itself mounts (contract.DATA_MOUNT, CONFIG_DIR under /etc, /dev/shm).
SYSTEM_DIRECTORIES = ["/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/opt", "/proc", "/run", "/sbin", "/sys",
                      "/usr", "/var", str(contract.DATA_MOUNT)]


def name_problem(name: str) -> str | None:
    """What NAME_RULES say of a name, for objects the apiserver accepted before they existed."""
    if len(name) > MAX_NAME_LENGTH:
        return NAME_TOO_LONG
    return None if re.fullmatch(NAME_PATTERN, name) else NAME_NOT_A_LABEL


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def rules(*pairs: tuple[str, str]) -> dict[str, Any]:
    """CEL rules for `x-kubernetes-validations`: (rule, message) pairs."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in pairs]}


class DatasetFormat(StrEnum):
    INSTRUCTION = "Instruction"  # jsonl with instruction/input/output
    CHAT = "Chat"  # jsonl with a messages list
    TEXT = "Text"  # jsonl with a text field, or plain text


class MethodType(StrEnum):
    """The method hint: a vocabulary.Method, or Auto."""

    AUTO = "Auto"
    LORA = v.Method.LORA.value
    QLORA = v.Method.QLORA.value
    FULL = v.Method.FULL.value


class PrecisionType(StrEnum):
    """The precision hint: a vocabulary.Precision, or Auto (mixed bf16 where the GPU has bf16, else fp16)."""

    AUTO = "Auto"
    BF16 = v.Precision.BF16.value
    FP16 = v.Precision.FP16.value
    FP32 = v.Precision.FP32.value
    PURE_BF16 = v.Precision.PURE_BF16.value


class Toggle(StrEnum):
    AUTO = "Auto"
    ENABLED = "Enabled"
    DISABLED = "Disabled"


class AttentionType(StrEnum):
    """The attention hint: a vocabulary.Attention, or Auto."""

    AUTO = "Auto"
    EAGER = v.Attention.EAGER.value
    SDPA = v.Attention.SDPA.value
    FLASH_ATTENTION_2 = v.Attention.FLASH_ATTENTION_2.value


class SaveType(StrEnum):
    ADAPTER = "Adapter"
    MERGED = "Merged"


class ModelSource(_Model):
    """model is what to fine-tune."""

    name: NAME = Field(description="name is a Hugging Face Hub id (e.g. meta-llama/Llama-3.1-8B), a kubetune "
                       "catalog name, or a path to a model folder on the data volume.")
    revision: str | None = Field(default=None, max_length=255, description="revision is the Hub revision (branch, "
                                 "tag or commit) to load.")
    tokenizer: str | None = Field(default=None, max_length=1024, description="tokenizer is a Hub id or a path on "
                                  "the data claim (`dataset.claimName`) to load the tokenizer from; default: the "
                                  "model's own.")
    config: dict[str, Any] | None = Field(default=None, description="config overrides or supplies the model's "
                                          "config.json fields (for models outside the catalog).",
                                          json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})


class Dataset(_Model):
    """dataset is the training data."""

    model_config = ConfigDict(json_schema_extra=rules(
        ("!self.source.contains('://')",
         "`dataset.source` must be a Hub dataset id (owner/name) or, with `claimName`, a path on the claim: URLs "
         "are not supported"),
        ("has(self.claimName) || self.source.matches('^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$')",
         "`dataset.source` without `claimName` must be a Hub dataset id such as tatsu-lab/alpaca"),
        ("!has(self.claimName) || (!self.source.startsWith('/') && !self.source.split('/').exists(p, p == '..'))",
         "`dataset.source` with `claimName` is a relative path on the claim, without '..'"),
    ))

    source: NAME = Field(description="source is a Hub dataset id (owner/name), or a relative path on the claim "
                         "named by `claimName`.")
    format: DatasetFormat = Field(default=DatasetFormat.INSTRUCTION, description="format of the records.")
    claim_name: str | None = Field(default=None, max_length=253, description="claimName is a "
                                   "PersistentVolumeClaim holding the data; `source` is then a path on it.")


class Method(_Model):
    """method holds hints for the planner; anything left out (or Auto) is chosen by it."""

    model_config = ConfigDict(json_schema_extra=rules(
        ("!has(self.offload) || self.offload != 'All' || (has(self.zeroStage) && self.zeroStage == 3)",
         "`offload` 'All' (parameters too) needs `zeroStage` 3"),
        ("!has(self.offload) || self.offload == 'None' || !has(self.zeroStage) || self.zeroStage >= 1",
         "`offload` needs `zeroStage` 1 or higher"),
        ("self.type != 'Full' || (!has(self.loraRank) && !has(self.loraTargets) && !has(self.loraDropoutPercent) "
         "&& !has(self.loraAdapterPrecision))",
         "LoRA settings may not be given with `type` 'Full'"),
        ("self.precision != 'PureBF16' || !has(self.offload) || self.offload == 'None'",
         "`precision` 'PureBF16' runs without `offload`: DeepSpeed offloads bf16 optimizer states only through its "
         "compiled CPU Adam, which kubetune's trainer cannot run or check; pure bf16 already halves the optimizer "
         "states"),
        ("!has(self.loraAdapterPrecision) || self.loraAdapterPrecision != 'FP32' || "
         "(self.precision != 'PureBF16' && self.precision != 'FP16')",
         "`loraAdapterPrecision` 'FP32' needs `precision` BF16, FP32 or Auto: pure bf16 trains bf16 adapters, and "
         "fp16 needs DeepSpeed's loss scaling, which casts the adapters to fp16"),
        ("self.type != 'QLoRA' || !has(self.zeroStage) || self.zeroStage <= 2",
         "`type` 'QLoRA' runs with `zeroStage` 0-2: ZeRO-3 cannot partition the 4-bit base model as the trainer "
         "loads it, and the 4-bit base is small enough to keep whole on every GPU"),
    ))

    type: MethodType = Field(default=MethodType.AUTO, description="type is LoRA, QLoRA (LoRA on a 4-bit NF4 base "
                             "model: about a quarter of LoRA's weight memory, on a quantised copy of the model, so "
                             "never chosen by Auto), Full, or Auto (the planner chooses between LoRA and Full).")
    lora_rank: int | None = Field(default=None, ge=1, le=1024, description="loraRank is the LoRA rank (1-1024; "
                                  f"{DEFAULT_LORA_RANK} when unset and the method is LoRA).")
    lora_targets: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=16, description="loraTargets are the module names LoRA adapts (default: all "
        "linear layers).")
    lora_dropout_percent: int | None = Field(default=None, ge=0, le=90, description="loraDropoutPercent is "
                                             "LoRA dropout in percent (0 when unset).")
    lora_adapter_precision: v.AdapterPrecision | None = Field(
        default=None, description="loraAdapterPrecision is what LoRA's adapters train in: Model (the model's 16-bit "
        "dtype, as DeepSpeed casts them; the default) or FP32 (fp32 adapters, gradients and AdamW states beside "
        "the 16-bit model, as PEFT keeps them: finer updates, twice the adapters' memory, and an fp32 copy of "
        "each adapted layer's input).")
    precision: PrecisionType = Field(default=PrecisionType.AUTO, description="precision is BF16 (bf16 weights and "
                                     "activations, fp32 master weights and AdamW states: 16 bytes per trained "
                                     "parameter), FP16 (as BF16, with loss scaling), FP32, PureBF16 (bf16 weights, "
                                     "gradients and AdamW states, no fp32 master: 8-10 bytes per trained parameter, "
                                     "but updates smaller than bf16's resolution are lost; no offload), or Auto "
                                     "(BF16 where the GPU has bf16, else FP16; never PureBF16).")
    zero_stage: int | None = Field(default=None, ge=0, le=3, description="zeroStage pins the DeepSpeed ZeRO "
                                   "stage (0-3).")
    offload: v.Offload | None = Field(default=None, description="offload pins DeepSpeed offload to the CPU: "
                                        "None, Optimizer, or All (parameters too; ZeRO-3 only).")
    gradient_checkpointing: Toggle = Field(default=Toggle.AUTO, description="gradientCheckpointing is Enabled, "
                                           "Disabled or Auto.")
    attention: AttentionType = Field(default=AttentionType.AUTO, description="attention pins the attention "
                                     "kernel; FlashAttention2 needs compute capability 8.0 or newer.")
    micro_batch: int | None = Field(default=None, ge=1, le=1024, description="microBatch pins sequences per GPU "
                                    "per step.")


class Training(_Model):
    """training holds the hyperparameters."""

    model_config = ConfigDict(json_schema_extra=rules(
        ("!(has(self.epochs) && has(self.maxSteps))", "`epochs` and `maxSteps` may not both be set"),
    ))

    epochs: int | None = Field(default=None, ge=1, le=1000, description="epochs over the dataset (1 when "
                               "neither this nor `maxSteps` is set).")
    max_steps: int | None = Field(default=None, ge=1, description="maxSteps is the number of optimizer steps.")
    # At most a two-digit exponent: every value the pattern admits is a finite double.
    learning_rate: str = Field(default="0.0002", pattern=r"^[0-9]+(\.[0-9]+)?([eE]-?[0-9]{1,2})?$", max_length=32,
                               description="learningRate as a decimal string (quoted in YAML), e.g. '0.0002' or '2e-4'; "
                               "more than 0 and at most 1.",
                               json_schema_extra=rules(
                                   ("double(self) > 0.0", "`learningRate` must be more than 0: nothing would be learned"),
                                   ("double(self) <= 1.0", "`learningRate` above 1 makes any optimizer diverge at once; "
                                    "fine-tuning rates are around 1e-5 to 1e-3 (LoRA up to about 1e-2)")))
    global_batch: int = Field(default=32, ge=1, le=65536, description="globalBatch is sequences per optimizer "
                              "step, across all GPUs.")
    seq_len: int = Field(default=2048, ge=16, le=1048576, description="seqLen is the (padded or packed) "
                         "sequence length in tokens.")
    seed: int = Field(default=42, ge=0, description="seed for data order and initialisation.")


class Resources(_Model):
    """resources bound what the plan may use."""

    model_config = ConfigDict(json_schema_extra=rules(
        ("!has(self.gpus) || !has(self.nodes) || self.gpus % self.nodes == 0",
         "`gpus` must be a multiple of `nodes`: every node of the plan runs as many GPUs"),
        ("!has(self.gpus) || !has(self.maxGPUs) || self.gpus <= self.maxGPUs", "`gpus` may not exceed `maxGPUs`"),
        ("!has(self.nodes) || !has(self.maxNodes) || self.nodes <= self.maxNodes",
         "`nodes` may not exceed `maxNodes`"),
    ))

    gpu_types: list[Annotated[str, Field(max_length=128)]] | None = Field(
        default=None, max_length=32, description="gpuTypes the job may use, as GPU Feature Discovery product "
        "labels (NVIDIA-H100-80GB-HBM3) or kubetune ids (H100-SXM-80GB); default: any.")
    max_gpus: int | None = Field(default=None, ge=1, le=4096, alias="maxGPUs",
                                 description="maxGPUs caps the GPUs used.")
    max_nodes: int | None = Field(default=None, ge=1, le=MAX_NODES, description="maxNodes caps the nodes used.")
    gpus: int | None = Field(default=None, ge=1, le=4096, description="gpus pins the number of GPUs in all "
                             "(e.g. exactly 16); the planner chooses everything else around it.")
    nodes: int | None = Field(default=None, ge=1, le=MAX_NODES, description="nodes pins the number of training pods "
                              "(torchrun nodes). With `gpus`, each pod gets gpus/nodes GPUs and pods may share a "
                              "machine that has them free; alone, each pod takes a whole node's GPUs.")
    objective: v.Objective = Field(default=v.Objective.CHEAPEST, description="objective is what the planner "
                                     "optimises: Cheapest (cost per token), Fastest, or FewestGPUs.")


class Output(_Model):
    """output is where the result goes."""

    claim_name: str | None = Field(default=None, max_length=253, description="claimName is the "
                                   "PersistentVolumeClaim the model and checkpoints are written to.")
    path: str = Field(default="/output", max_length=1024, description="path in the training container where the "
                      "output volume is mounted: absolute, and not a system directory of the image or one kubetune "
                      "mounts (/data, /etc/kubetune, /dev/shm).", json_schema_extra=rules(
                          ("self.startsWith('/')", "`output.path` must be an absolute path, such as /output"),
                          ("!self.matches('(^|/)[.][.]?(/|$)')", "`output.path` may not contain '.' or '..' segments"),
                          (f"self != '/' && !{SYSTEM_DIRECTORIES}.exists(d, self == d || self.startsWith(d + '/'))",
                           "`output.path` would hide a directory the trainer needs (the image's system directories, "
                           "its Python under /opt, or the dataset at /data): use a path such as /output")))
    save: SaveType = Field(default=SaveType.ADAPTER, description="save the LoRA Adapter alone or the Merged "
                           "model.")
    keep_checkpoints: int = Field(default=2, ge=1, le=1000, description="keepCheckpoints is how many of the "
                                  "newest complete checkpoints stay; older ones are deleted after each save.")


class SecretKeyRef(_Model):
    name: NAME = Field(description="name of the Secret.")
    key: str = Field(default="token", max_length=253, description="key in the Secret.")


class Images(_Model):
    trainer: str | None = Field(default=None, max_length=1024, description="trainer image override.")


# Kubernetes' syntax for label values, and for label and annotation keys (an optional DNS-subdomain prefix and
# '/', then a name of at most 63 characters).
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_KEY_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_KEY_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _qualified_names(keys: dict[str, str] | None) -> dict[str, str] | None:
    """Keys the apiserver would refuse in the pods' metadata, refused before the Job is created. (Checked here,
    not by CEL: a CRD schema cannot bound a map key's length, so a rule over keys would exceed CEL's cost budget.)"""
    for key in keys or {}:
        prefix, _, name = key.rpartition("/")
        if (len(name) > 63 or not _KEY_NAME.fullmatch(name) or
                (prefix and (len(prefix) > 253 or not _KEY_PREFIX.fullmatch(prefix))) or (not prefix and "/" in key)):
            raise ValueError(f"'{key}' is not a valid label or annotation key: an optional DNS subdomain prefix and "
                             "'/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter "
                             "or digit")
    return keys


class PodMetadata(_Model):
    """podMetadata is added to the training pods (e.g. cost labels, sidecar annotations)."""

    labels: Annotated[dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] | None,
                      AfterValidator(_qualified_names)] = Field(
        default=None, description="labels added to the training pods.", json_schema_extra={"maxProperties": 64})
    annotations: Annotated[dict[str, Annotated[str, Field(max_length=4096)]] | None,
                           AfterValidator(_qualified_names)] = Field(
        default=None, description="annotations added to the training pods.", json_schema_extra={"maxProperties": 64})


class Recovery(_Model):
    """recovery bounds how often a run is restarted from its newest checkpoint."""

    max_restarts: int = Field(default=3, ge=0, le=100, description="maxRestarts after a worker is lost (pod "
                              "deleted or evicted, node lost, preempted) or fails with an error a retry may fix.")
    max_out_of_memory_replans: int = Field(default=3, ge=0, le=10, description="maxOutOfMemoryReplans: after a GPU "
                                           "runs out of memory the run restarts on a more memory-frugal plan (after "
                                           "the kernel kills it for host memory, on one that offloads less), at most "
                                           "this many times.")


class FineTuneJobSpec(_Model):
    """spec is the desired fine-tuning run."""

    model_config = ConfigDict(json_schema_extra=rules(
        ("self.method.attention != 'Eager' || self.training.seqLen <= 8192",
         "`method.attention` 'Eager' keeps a seqLen^2 score matrix per head: `training.seqLen` must be at most "
         "8192 with it"),
        ("self.method.type != 'QLoRA' || self.output.save != 'Merged'",
         "`output.save` 'Merged' is refused with `method.type` 'QLoRA': merging would fold the adapters into the 4-bit "
         "base, re-quantised; save the Adapter and merge it into the original model"),
        # A running job's pods are placed for its plan; a suspended one has none, and replans when it resumes.
        ("self.resources == oldSelf.resources || oldSelf.suspend",
         "`resources` may change only while the job is suspended (spec.suspend true)"),
    ))

    model: ModelSource = Field(description="model to fine-tune.",
                               json_schema_extra=rules(("self == oldSelf", "`model` is immutable")))
    dataset: Dataset = Field(description="dataset to train on.",
                             json_schema_extra=rules(("self == oldSelf", "`dataset` is immutable")))
    method: Method = Field(default_factory=Method, description="method hints for the planner.",
                           json_schema_extra={"default": {}, **rules(("self == oldSelf", "`method` is immutable"))})
    training: Training = Field(default_factory=Training, description="training "
                               "hyperparameters.",
                               json_schema_extra={"default": {}, **rules(("self == oldSelf", "`training` is immutable"))})
    resources: Resources = Field(default_factory=Resources, description="resources the plan may use. They may "
                                 "change while the job is suspended: it is replanned when it resumes, and goes on "
                                 "from its checkpoints.", json_schema_extra={"default": {}})
    output: Output = Field(default_factory=Output, description="output of the run.",
                           json_schema_extra={"default": {}, **rules(
                               # A run moved to another claim or path would silently restart from step 0.
                               ("self == oldSelf", "`output` is immutable: the run's checkpoints are there"))})
    checkpoint_interval_steps: int = Field(default=500, ge=1, description="checkpointIntervalSteps between "
                                           "checkpoints. Changes take effect at the next attempt.")
    images: Images = Field(default_factory=Images, description="images overrides. Changes take effect at the next attempt.",
                           json_schema_extra={"default": {}})
    hub_token_secret_ref: SecretKeyRef | None = Field(default=None, description="hubTokenSecretRef names the "
                                                      "Secret key holding a Hugging Face token. Changes take effect at the next attempt.")
    queue_name: str | None = Field(default=None, max_length=63, description="queueName is the Kueue LocalQueue; "
                                   "the job then waits for Kueue's admission. Changes take effect at the next attempt.")
    priority_class_name: str | None = Field(default=None, max_length=253, description="priorityClassName for "
                                            "the training pods. Changes take effect at the next attempt.")
    pod_metadata: PodMetadata | None = Field(default=None, description="podMetadata adds labels and annotations "
                                             "to the training pods. Changes take effect at the next attempt.")
    suspend: bool = Field(default=False, description="suspend stops the training pods (checkpoints are kept) "
                          "until set back to false.")
    recovery: Recovery = Field(default_factory=Recovery, description="recovery limits restarts from checkpoints.",
                               json_schema_extra={"default": {}})


class Condition(_Model):
    """A metav1.Condition."""

    type: str = Field(max_length=316, description="type of the condition: Planned, Admitted, Suspended, Running, "
                      "Succeeded, Failed or OutputDurable (api/conditions.py).")
    status: str = Field(pattern="^(True|False|Unknown)$", description="status: True, False or Unknown (not yet "
                        "known).")
    reason: str = Field(max_length=1024, description="reason, a CamelCase word.")
    message: str = Field(max_length=32768, description="message for humans.")
    last_transition_time: str = Field(description="lastTransitionTime when the status last changed.",
                                      json_schema_extra={"format": "date-time"})
    observed_generation: int | None = Field(default=None, description="observedGeneration the condition "
                                            "was set for.")


class MemoryBreakdown(_Model):
    """Predicted bytes per GPU at the step's peak phase, by what holds them; the planner's memory model
    returns this type."""

    weights_bytes: int = Field(description="weightsBytes: the model's weights (this GPU's partition of them).")
    gradients_bytes: int = Field(description="gradientsBytes: gradients alive at the peak phase.")
    optimizer_states_bytes: int = Field(description="optimizerStatesBytes: optimizer moments and fp32 master "
                                        "weights kept on the GPU.")
    activations_bytes: int = Field(description="activationsBytes: activations saved for backward (0 unless the "
                                   "peak is at the start of backward).")
    logits_bytes: int = Field(description="logitsBytes: the logits and the loss's copies of them.")
    buffers_bytes: int = Field(description="buffersBytes: DeepSpeed's communication and prefetch buckets.")
    overhead_bytes: int = Field(description="overheadBytes: what no tensor of the configuration holds: the CUDA "
                                "context, NCCL's buffers, kernels' workspaces and the allocator's unfilled last "
                                "pages.")
    allocator_margin_bytes: int = Field(description="allocatorMarginBytes: what the caching allocator reserves "
                                        "beyond the allocated peak.")
    total_bytes: int = Field(description="totalBytes: all of the above, what must fit in the GPU.")
    peak_phase: v.Phase = Field(description="peakPhase is when in the step the peak falls: BackwardStart, "
                              "BackwardEnd or OptimizerStep.")
    host_bytes_per_node: int = Field(description="hostBytesPerNode is host memory the offload needs per node.")


class RunnerUp(_Model):
    """A configuration the planner weighed and did not choose."""

    gpu_type: str = Field(max_length=128, description="gpuType is the kubetune GPU id.")
    gpus: int = Field(description="gpus in all.")
    method: v.Method = Field(description="method: LoRA, QLoRA or Full.")
    zero_stage: v.ZeroStage = Field(description="zeroStage is the DeepSpeed ZeRO stage.")
    offload: v.Offload = Field(description="offload to the CPU: None, Optimizer or All.")
    gradient_checkpointing: bool = Field(description="gradientCheckpointing on or off.")
    predicted_peak_bytes: int = Field(description="predictedPeakBytes per GPU.")
    tokens_per_second: int = Field(description="tokensPerSecond predicted, all GPUs together.")
    why_not_chosen: str = Field(max_length=1024, description="whyNotChosen, against the chosen plan.")


class Plan(_Model):
    """The configuration the planner chose, with its prediction."""

    gpu_type: str = Field(max_length=128, description="gpuType is the kubetune GPU id.")
    gpu_product: str = Field(max_length=128, description="gpuProduct is the nvidia.com/gpu.product label "
                             "the pods select.")
    gpu_memory_bytes: int = Field(description="gpuMemoryBytes is one GPU's memory, to compare with "
                                  "`memory.totalBytes`.")
    nodes: int = Field(description="nodes: training pods (torchrun nodes).")
    gpus_per_node: int = Field(description="gpusPerNode: GPUs per training pod.")
    gpus: int = Field(description="gpus in all: nodes x gpusPerNode.")
    peak_summary: str = Field(max_length=64, description="peakSummary is the predicted per-GPU peak against the "
                              "GPU's memory, e.g. '49.7GiB/80GiB'.")
    method: v.Method = Field(description="method: LoRA, QLoRA or Full.")
    lora_rank: int | None = Field(default=None, description="loraRank when the method is LoRA or QLoRA.")
    zero_stage: v.ZeroStage = Field(description="zeroStage is the DeepSpeed ZeRO stage (0-3).")
    offload: v.Offload = Field(description="offload to the CPU: None, Optimizer or All (parameters too).")
    gradient_checkpointing: bool = Field(description="gradientCheckpointing on or off.")
    attention: v.Attention = Field(description="attention kernel: Eager, SDPA or FlashAttention2.")
    precision: v.Precision = Field(description="precision of weights and activations: BF16, FP16 or FP32, with "
                                   "an fp32 master and optimizer states; PureBF16: all in bf16.")
    lora_adapter_precision: v.AdapterPrecision | None = Field(default=None, description="loraAdapterPrecision "
                                                              "when the method trains LoRA adapters: Model or FP32.")
    micro_batch: int = Field(description="microBatch: sequences per GPU per forward pass.")
    gradient_accumulation: int = Field(description="gradientAccumulation: micro-batches per optimizer step.")
    loss_chunk_tokens: int | None = Field(default=None, description="lossChunkTokens: the trainer computes the "
                                          "cross-entropy this many tokens at a time, so the whole micro-batch's "
                                          "fp32 logits never exist; absent: Hugging Face's own loss.")
    predicted_peak_bytes: int = Field(description="predictedPeakBytes per GPU (`memory.totalBytes`).")
    memory: MemoryBreakdown = Field(description="memory is the predicted peak's breakdown.")
    predicted_step_milliseconds: int = Field(description="predictedStepMilliseconds per optimizer step.")
    predicted_tokens_per_second: int = Field(description="predictedTokensPerSecond, all GPUs together.")
    explanation: list[Annotated[str, Field(max_length=4096)]] = Field(max_length=16, description="explanation "
                                                                      "of the choice, a sentence each.")
    runners_up: list[RunnerUp] = Field(default_factory=list, max_length=8, description="runnersUp: the best "
                                       "configurations not chosen, and why.")
    planned_for: Resources | None = Field(default=None, description="plannedFor is spec.resources as they were "
                                          "when the plan was made: a job resumed with other resources is replanned.")


class Children(_Model):
    """The objects the job owns, by name."""

    config_map: str | None = Field(default=None, max_length=253, description="configMap holding ds_config.json "
                                   "and trainer.json.")
    service: str | None = Field(default=None, max_length=253, description="service: the headless Service the "
                                "workers rendezvous through.")
    job: str | None = Field(default=None, max_length=253, description="job: the Indexed Job of the training pods.")


class Progress(_Model):
    """Training progress, as rank 0 reports it."""

    step: int = Field(default=0, description="step: optimizer steps done.")
    total_steps: int | None = Field(default=None, description="totalSteps the run will take.")
    eta_seconds: int | None = Field(default=None, description="etaSeconds until the last step, at the recent "
                                    "pace.")
    summary: str | None = Field(default=None, max_length=64, description="summary as 'step/totalSteps'.")


class Attempt(_Model):
    """One run of the training Job that ended without finishing, and what the operator did about it."""

    number: int = Field(description="number of the attempt, from 1.")
    reason: str = Field(max_length=64, description="reason it ended: GPUOutOfMemory, "
                        "HostOutOfMemory, InvalidInput, WorkerLost, WorkerFailed, or Resized (its resources "
                        "changed while suspended).")
    message: str = Field(max_length=4096, description="message from the failed worker or the Job.")
    plan_summary: str = Field(max_length=512, description="planSummary of the plan the attempt ran.")
    predicted_peak_bytes: int = Field(description="predictedPeakBytes of that plan, per GPU.")
    measured_peak_bytes: int | None = Field(default=None, description="measuredPeakBytes the worker reported "
                                            "when it ran out of memory.")
    action: str = Field(max_length=512, description="action taken: the new plan, a restart, or giving up.")
    finished_at: str = Field(json_schema_extra={"format": "date-time"}, description="finishedAt is when it ended.")


class JobPhase(StrEnum):
    """A one-word summary of the conditions, for `kubectl get`; nothing decides by it."""

    PENDING = "Pending"
    PLANNED = "Planned"
    UNSCHEDULABLE = "Unschedulable"
    QUEUED = "Queued"
    WAITING = "Waiting"
    SUSPENDED = "Suspended"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class FineTuneJobStatus(_Model):
    """status is what the operator observed and decided."""

    phase: JobPhase | None = Field(default=None, description="phase summarises the conditions for display: "
                                   "Pending, Planned, Unschedulable, Queued, Waiting (for busy GPUs to free), Suspended, "
                                   "Running, Restarting, "
                                   "Succeeded or Failed; read the conditions to decide anything.")
    observed_generation: int | None = Field(default=None, description="observedGeneration is the spec "
                                            "generation the status was written for.")
    conditions: list[Condition] = Field(default_factory=list, max_length=16, description="conditions of the job; "
                                        "each is Unknown until the operator knows it.",
                                        json_schema_extra={"x-kubernetes-list-type": "map",
                                                           "x-kubernetes-list-map-keys": ["type"]})
    plan: Plan | None = Field(default=None, description="plan the planner chose; the children are built from it.")
    children: Children | None = Field(default=None, description="children the job owns.")
    progress: Progress | None = Field(default=None, description="progress of the current attempt.")
    start_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                   description="startTime when the workers first ran.")
    completion_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                        description="completionTime when the job succeeded or failed.")
    attempts: list[Attempt] = Field(default_factory=list, max_length=128, description="attempts that ended "
                                    "without finishing, oldest first.")
    memory_scale: str | None = Field(default=None, max_length=16, description="memoryScale is the measured over "
                                     "predicted memory the current plan was made with, after an out-of-memory "
                                     "failure (a decimal string), for all but the CUDA context and NCCL's "
                                     "buffers, which no plan shrinks.")

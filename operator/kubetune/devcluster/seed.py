"""A tiny world to fine-tune on the local cluster's real node, and a way to put it on a claim.

The world: a reversal task ("reverse: red green blue" -> "blue green red") in Instruction format and a byte-level
BPE tokenizer trained on it, so a random-weight model from an inline config learns something visible within a few
dozen steps, with nothing downloaded. The demo, the node tests and the trainer tests share it.
"""

import json
import time
from pathlib import Path
from typing import Any, Protocol

import yaml

DATASET_FILE = "reverse.jsonl"
TOKENIZER_FOLDER = "tokenizer"
VOCAB_SIZE = 128
WORDS = ("red", "green", "blue", "cyan", "pink", "gold", "gray", "navy")


def records(count: int = 64) -> list[dict[str, str]]:
    out = []
    for i in range(count):
        chosen = [WORDS[(i + k) % len(WORDS)] for k in range(3 + i % 3)]
        out.append({"instruction": "reverse: " + " ".join(chosen), "output": " ".join(reversed(chosen))})
    return out


def model_config() -> dict[str, Any]:
    """A two-layer Llama small enough to train in seconds on a CPU."""
    return {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 172, "vocab_size": VOCAB_SIZE, "pad_token_id": 0,
            "eos_token_id": 1, "bos_token_id": 1}


def write_world(folder: Path) -> Path:
    """The dataset file and the tokenizer folder under `folder` (the layout a claim gets)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    data = records()
    (folder / DATASET_FILE).write_text("".join(json.dumps(r) + "\n" for r in data))
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    texts = [r["instruction"] + "\n" + r["output"] for r in data]
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=VOCAB_SIZE,
                                                             special_tokens=["<pad>", "<eos>", "<unk>"]))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>",
                            unk_token="<unk>").save_pretrained(folder / TOKENIZER_FOLDER)
    return folder


class Kubectl(Protocol):
    def __call__(self, *args: str, stdin: str | None = None) -> Any: ...


def put_on_claim(kubectl: Kubectl, namespace: str, claim: str, folder: Path, image: str,
                 timeout: float = 300) -> None:
    """Copy `folder` (one level of subfolders) onto `claim` with a Job of `image` running as the trainer's user,
    as a user would load data onto a claim; the files travel in a ConfigMap, so they must be small."""
    files = {path.relative_to(folder): path for path in sorted(folder.rglob("*")) if path.is_file()}
    keys = {str(relative).replace("/", "__"): relative for relative in files}
    name = f"seed-{claim}"
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
                  "data": {key: files[relative].read_text() for key, relative in keys.items()}}
    script = " && ".join(f"mkdir -p /data/{relative.parent} && cp /seed/{key} /data/{relative}"
                         for key, relative in keys.items())
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": namespace},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "copy", "image": image, "command": ["sh", "-c", script],
                            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": [{"name": "seed", "mountPath": "/seed"},
                                             {"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "seed", "configMap": {"name": name}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        }}},
    }
    _ok(kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([config_map, job])))
    deadline = time.monotonic() + timeout
    while True:
        status = json.loads(_ok(kubectl("get", "job", name, "-n", namespace, "-o", "json"))).get("status", {})
        if status.get("succeeded"):
            break
        if status.get("failed") or time.monotonic() > deadline:
            logs = kubectl("logs", f"job/{name}", "-n", namespace).stdout
            raise RuntimeError(f"copying onto claim {claim} failed: {status}; {logs}")
        time.sleep(1)
    _ok(kubectl("delete", "job", name, "-n", namespace, "--cascade=foreground"))
    _ok(kubectl("delete", "configmap", name, "-n", namespace))


def claim(name: str, namespace: str, size: str = "5Gi") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}


def _ok(result: Any) -> str:
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip())
    return result.stdout

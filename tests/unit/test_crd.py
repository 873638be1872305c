"""The CRD in crds/ and the chart's CRD template are generated from the API models and must not drift from them."""

import re
from pathlib import Path

import pytest
import yaml

from kubetune.api import crd, v1alpha1, vocabulary

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted(crd.outputs()))
def test_committed_crd_is_what_the_models_generate(path: str) -> None:
    committed = (ROOT / path).read_text()
    assert committed == crd.outputs()[path], f"{path} is stale: run `kubetune crd --write` from the repository root"


def walk(schema: dict, path: str = ""):
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")


@pytest.mark.parametrize("part", ["spec", "status"])
def test_every_field_is_described_and_bounded(part: str) -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][part]
    for path, node in walk(schema, part):
        if not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description for kubectl explain"
        if node.get("type") == "string" and "enum" not in node and node.get("format") != "date-time":
            assert "maxLength" in node or "pattern" in node, f"{path} is an unbounded string"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path} is an unbounded list"


def test_byte_fields_say_so_in_their_names() -> None:
    """A number of bytes named without its unit reads as GiB to half of the users (API conventions)."""
    status = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    sizes = [path for path, node in walk(status, "status") if node.get("type") == "integer" and (
        path.startswith("status.plan.memory.") or any(word in path.rsplit(".", 1)[-1].lower()
                                                      for word in ("memory", "peak", "host")))]
    assert "status.plan.memory.weightsBytes" in sizes and "status.plan.gpuMemoryBytes" in sizes
    assert [path for path in sizes if "Bytes" not in path.rsplit(".", 1)[-1]] == []


def test_the_spec_hints_speak_the_status_vocabulary() -> None:
    """What a user pins in the spec reads the same in the plan the operator writes."""
    assert {v.value for v in v1alpha1.MethodType} - {"Auto"} == {v.value for v in vocabulary.Method}
    assert {v.value for v in v1alpha1.AttentionType} - {"Auto"} == {v.value for v in vocabulary.Attention}
    status = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    plan = status["properties"]["plan"]["properties"]
    spec = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert set(plan["offload"]["enum"]) == set(spec["method"]["properties"]["offload"]["enum"])
    assert set(plan["method"]["enum"]) | {"Auto"} == set(spec["method"]["properties"]["type"]["enum"])
    assert set(plan["attention"]["enum"]) | {"Auto"} == set(spec["method"]["properties"]["attention"]["enum"])


def test_schema_is_structural() -> None:
    text = yaml.safe_dump(crd.crd())
    assert "$ref" not in text and "anyOf" not in text
    assert not re.search(r"^\s*title:", text, re.M)


@pytest.mark.parametrize(("name", "problem"), [
    ("llama-8b-lora", None),
    ("a" * 53, None),
    ("a" * 54, "at most 53 characters"),
    ("team.llama", "no dots"),
    ("7b-lora", "start with a letter"),
    ("lora-", "end with a letter or digit"),
])
def test_names_that_cannot_name_the_children_are_refused(name: str, problem: str | None) -> None:
    """The longest name still gives the last pod of the most nodes allowed a hostname of 63 characters."""
    found = v1alpha1.name_problem(name)
    assert (found is None) if problem is None else (problem in found)
    assert len(f"{'a' * v1alpha1.MAX_NAME_LENGTH}-train-{v1alpha1.MAX_NODES - 1}") == 63

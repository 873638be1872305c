"""The CRD in crds/ is generated from the API models and must not drift from them."""

import re
from pathlib import Path

import pytest
import yaml

from kubetune.api import crd, v1alpha1

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", crd.CRD_PATHS)
def test_committed_crd_is_what_the_models_generate(path: str) -> None:
    committed = (ROOT / path).read_text()
    assert committed == crd.render(), f"{path} is stale: run `kubetune crd --write` from the repository root"


def walk(schema: dict, path: str = ""):
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")


def test_every_spec_field_is_described_and_bounded() -> None:
    spec = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, node in walk(spec, "spec"):
        if not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description for kubectl explain"
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node or "pattern" in node, f"{path} is an unbounded string"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path} is an unbounded list"


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

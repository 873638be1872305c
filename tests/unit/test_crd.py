"""The CRD in crds/ is generated from the API models and must not drift from them."""

import re
from pathlib import Path

import pytest
import yaml

from kubetune.api import crd

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

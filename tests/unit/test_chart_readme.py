"""The chart's README is generated from values.yaml's `# --` comments and must not drift from them."""

from pathlib import Path

import yaml

from kubetune import chart_readme

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubetune"

SAMPLE = """\
# -- Top-level name.
name: ""

operator:
  # -- Replicas of the operator;
  # the rest stand by.
  replicas: 1
  image:
    tag: ""  # an inline note, not a description
  # not a description: no `# --`
  port: 8081
"""


def test_committed_readme_is_what_values_yaml_generates() -> None:
    assert (CHART / "README.md").read_text() == chart_readme.render(CHART), (
        "charts/kubetune/README.md is stale: run `kubetune chart-readme --write` from the repository root")


def test_every_value_is_described_by_its_own_comment_or_one_above_it() -> None:
    assert chart_readme.undocumented((CHART / "values.yaml").read_text()) == []


def test_a_description_is_its_comment_lines_and_belongs_to_the_key_below_with_its_default() -> None:
    values = chart_readme.documented(SAMPLE)
    assert [(v.key, v.type, v.default, v.description) for v in values] == [
        ("name", "string", '""', "Top-level name."),
        ("operator.replicas", "int", "1", "Replicas of the operator; the rest stand by."),
    ]
    assert chart_readme.undocumented(SAMPLE) == ["operator.image.tag", "operator.port"]


def test_the_readme_has_the_values_table_and_the_charts_version() -> None:
    readme = chart_readme.render(CHART)
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert "| `crds.enabled` | bool | `true` |" in readme
    assert f"Version {version} " in readme and "<!--" not in readme.split("\n", 1)[1]  # every marker replaced

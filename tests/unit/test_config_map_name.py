"""A job's ConfigMap is named for its content (resources/names.py): the Job is created beside it, so a
ConfigMap of the same name with other content (left by an unfinished creation, then replanned) must be
impossible, and a change of plan or spec must give another name."""

import re

from kubetune.api import v1alpha1 as api
from kubetune.catalog.cluster_gpus import node_groups
from kubetune.config import DEFAULT_TRAINER_IMAGE
from kubetune.planner.decision import decide, settings_from_plan
from kubetune.resources.config_map import config_map
from kubetune.resources.job import job
from tests.unit.test_real_node import real_node, tiny_spec

# A DNS subdomain, what the apiserver accepts as a ConfigMap's name.
SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"


def configured(name: str, spec: api.FineTuneJobSpec, plan: api.Plan) -> dict:
    return config_map(name, spec, plan, settings_from_plan(spec, plan))


def test_the_same_configuration_gets_the_same_name_and_the_job_mounts_it() -> None:
    spec = tiny_spec()
    decided = decide(spec, node_groups([real_node()], []))
    assert decided.plan is not None and decided.group is not None
    first, again = configured("tiny", spec, decided.plan), configured("tiny", spec, decided.plan)
    assert first == again and first["metadata"]["name"].startswith("tiny-config-")
    manifest = job("tiny", spec, decided.plan, decided.group, DEFAULT_TRAINER_IMAGE, first["metadata"]["name"])
    mounted = [v["configMap"]["name"] for v in manifest["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    assert mounted == [first["metadata"]["name"]]


def test_another_plan_or_spec_gets_another_name() -> None:
    spec = tiny_spec()
    plan = decide(spec, node_groups([real_node()], [])).plan
    assert plan is not None
    replanned = plan.model_copy(update={"micro_batch": plan.micro_batch * 2,
                                        "gradient_accumulation": max(1, plan.gradient_accumulation // 2)})
    edited = spec.model_copy(update={"checkpoint_interval_steps": 7})
    names = {configured("tiny", s, p)["metadata"]["name"] for s, p in ((spec, plan), (spec, replanned), (edited, plan))}
    assert len(names) == 3


def test_the_longest_job_name_still_gives_a_valid_config_map_name() -> None:
    longest = "j" * api.MAX_NAME_LENGTH
    spec = tiny_spec()
    plan = decide(spec, node_groups([real_node()], [])).plan
    assert plan is not None
    name = configured(longest, spec, plan)["metadata"]["name"]
    assert len(name) <= 253 and re.fullmatch(SUBDOMAIN, name)

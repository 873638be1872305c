"""The operator's one configuration (kubetune/config.py): flags win over the chart's environment, and a value
it cannot start with is named at start, not met later in a reconcile."""

import pytest

from kubetune.config import DEFAULT_TRAINER_IMAGE, ConfigError, load


def test_the_charts_values_arrive_through_the_environment() -> None:
    config = load({"KUBETUNE_RECONCILE_SECONDS": "2.5", "KUBETUNE_GPU_PRICES": '{"H100-SXM-80GB": 2.1}',
                   "KUBETUNE_TRAINER_IMAGE": "registry.local/trainer:1", "POD_NAME": "kubetune-0"})
    assert (config.reconcile_seconds, config.gpu_prices, config.trainer_image, config.identity) == \
        (2.5, {"H100-SXM-80GB": 2.1}, "registry.local/trainer:1", "kubetune-0")


def test_defaults_without_flags_or_environment() -> None:
    config = load({})
    assert (config.reconcile_seconds, config.gpu_prices, config.trainer_image, config.namespaces) == \
        (10.0, {}, DEFAULT_TRAINER_IMAGE, ())
    assert config.identity  # the host and process, when the pod's name is not given


def test_flags_win_over_the_environment_and_unset_flags_do_not() -> None:
    config = load({"POD_NAME": "from-env"}, identity="from-flag", metrics_port=None, namespaces=("a", "b"))
    assert (config.identity, config.metrics_port, config.namespaces) == ("from-flag", None, ("a", "b"))


@pytest.mark.parametrize(("environ", "named"), [
    ({"KUBETUNE_GPU_PRICES": "{H100: 2}"}, "KUBETUNE_GPU_PRICES is not JSON"),
    ({"KUBETUNE_GPU_PRICES": '{"H100": "cheap"}'}, "KUBETUNE_GPU_PRICES"),
    ({"KUBETUNE_RECONCILE_SECONDS": "0"}, "KUBETUNE_RECONCILE_SECONDS"),
    ({"KUBETUNE_RECONCILE_SECONDS": "ten"}, "KUBETUNE_RECONCILE_SECONDS"),
])
def test_a_value_the_operator_cannot_start_with_is_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load(environ)

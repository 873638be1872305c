"""The whole-step peak probe (memprobe/peak.py) is exact: on steps small enough to count by hand it reports the
bytes and the moment of the peak, counts views and in-place ops as nothing, frees what autograd's graph held when
backward releases it, and subtracts tensors that lived before it started when they die."""

import pytest

torch = pytest.importorskip("torch")

from kubetune.memprobe.peak import PeakProbe  # noqa: E402

pytestmark = pytest.mark.measured

FP32 = 4


def test_new_storages_count_views_and_in_place_ops_do_not() -> None:
    with PeakProbe() as probe:
        a = torch.ones(256)  # 1 KiB
        b = a * 2  # 1 KiB
        b.view(16, 16).add_(1)  # a view and an in-place op: nothing new
        del a  # freed: 1 KiB live
        c = torch.cat([b, b])  # 2 KiB while b lives: the peak, 3 KiB
        del b
        assert probe.live_bytes == 2 * 1024
        del c
    assert probe.live_bytes == 0
    assert (probe.peak.live_bytes, probe.peak.op) == (3 * 1024, "aten.cat.default")


def test_a_linear_training_step_by_hand() -> None:
    """y = x W^T (8x64 by 32x64, fp32, no bias), loss = sum(y^2), then SGD: counted by hand."""
    weight = torch.nn.Parameter(torch.randn(32, 64))
    x = torch.randn(8, 64)
    optimizer = torch.optim.SGD([weight], lr=0.1)
    with PeakProbe([weight, x]) as probe:
        at_rest = probe.live_bytes
        with probe.phase("forward"):
            y = x @ weight.t()  # 8x32: kept by the square for backward
            loss = y.square().sum()  # y^2 is freed once summed; the loss is one float
        del y
        assert probe.live_bytes - at_rest == 8 * 32 * FP32 + FP32
        with probe.phase("backward"):
            loss.backward()
        with probe.phase("step"):
            optimizer.step()  # in place: nothing new
        del loss
        # Only the weight's gradient is left: the graph, y and every temporary are gone.
        assert probe.live_bytes - at_rest == 32 * 64 * FP32
    # The peak is the weight gradient's matmul: the loss, the loss's gradient, y's gradient and the new 32x64
    # gradient alive at once. y itself is gone by then: autograd releases what a node saved once the node has run.
    assert probe.peak.phase == "backward"
    assert probe.peak.op == "aten.mm.default"
    assert probe.peak.live_bytes - at_rest == FP32 + FP32 + 8 * 32 * FP32 + 32 * 64 * FP32


def test_tensors_from_before_the_probe_are_subtracted_when_they_die() -> None:
    kept, dropped = torch.zeros(100), torch.zeros(50)
    with PeakProbe([kept, dropped]) as probe:
        assert probe.live_bytes == 150 * FP32
        del dropped
        assert probe.live_bytes == 100 * FP32
    assert kept.numel() == 100

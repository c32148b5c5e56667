"""Placement: forced modes, the cost model, the per-op record."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hetaccel.host.planner import board_image, board_images, op_cost
from hetaccel.workloads.placement import CostModel, Executor
from hetaccel.spec import DEFAULT_CONFIG

_spec = importlib.util.spec_from_file_location("refs", Path(__file__).with_name("refs.py"))
refs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(refs)


def _ops(ex):
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (4, 16)).astype(np.int8)
    b = rng.integers(-128, 128, (16, 8)).astype(np.int8)
    c = ex.matmul("mm", a, b)
    np.testing.assert_array_equal(c, a.astype(np.int64) @ b)
    codes = np.array([-4096, 0, -100])
    g = ex.activation_fixed16("act", "gelu", codes)
    # Q4.12 in and out, within 2 LSB of erf-GELU (docs/numerics.md), wherever it ran
    assert np.abs(g - refs.gelu(codes / 4096) * 4096).max() <= 2
    return c, g


def test_forced_cpu_needs_no_device():
    ex = Executor(None, "cpu")
    _ops(ex)
    assert [d.placed for d in ex.ops] == ["cpu", "cpu"]
    s = ex.summary()
    assert s["offloaded_macs"] == 0 and s["cpu_macs"] == 4 * 16 * 8 and s["device_cycles"] == 0


def test_forced_accelerator_runs_on_device_and_matches_cpu():
    from hetaccel.host import Accelerator

    with Accelerator.open("emu") as acc:
        ex = Executor(acc, "accelerator")
        c, g = _ops(ex)
        assert len(acc.profile.ops) == 2
    c2, g2 = _ops(Executor(None, "cpu"))
    np.testing.assert_array_equal(c, c2)
    np.testing.assert_array_equal(g, g2)
    assert [d.placed for d in ex.ops] == ["accelerator", "accelerator"]
    s = ex.summary()
    assert s["offloaded_macs"] == 512 and s["cpu_macs"] == 0 and s["device_cycles"] > 0
    assert set(s["projected_latency_s"]) == {b.name for b in board_images()}
    # the board images have no activation unit: the GELU is host time there
    assert s["projection"]["config"]["cpu_ops"] == 0
    assert s["projection"]["ulx3s-85f"]["cpu_ops"] == 1
    assert s["projection"]["ulx3s-85f"]["missing_units"] == ["activation"]
    assert s["projection"]["ulx3s-85f"]["macs"] == 256


def test_auto_follows_the_cost_model():
    from hetaccel.host import Accelerator

    with Accelerator.open("emu") as acc:
        # a UART-connected board: the link makes a tiny matmul cheaper on the CPU
        ex = Executor(acc, "auto")
        ex.matmul("small", np.ones((2, 8), np.int8), np.ones((8, 8), np.int8))
        assert ex.ops[-1].placed == "cpu" and "link-bound" in ex.ops[-1].reason
        # a slow CPU and a fast, wide link: offloading wins
        fast = CostModel(acc.config, _fast(acc.config), cpu_macs_per_s=1e3, device_call_s=0.0)
        ex = Executor(acc, "auto", fast)
        ex.matmul("big", np.ones((64, 64), np.int8), np.ones((64, 64), np.int8))
        assert ex.ops[-1].placed == "accelerator"
        assert ex.ops[-1].device_cycles > 0


def _fast(config):
    """The device behind a fast clock and the fastest link a config allows."""
    return board_image(None, config.replace(clock_hz=10**9, baud=10**8))


def test_cost_model_is_policy_over_planner_figures():
    cm = CostModel(DEFAULT_CONFIG)
    shape = {"m": 128, "k": 384, "n": 384}
    assert cm.board.name == "config" and cm.board.config == DEFAULT_CONFIG
    cost = op_cost(DEFAULT_CONFIG, "matmul", shape)
    assert cost.busy["gemm"] >= 128 * 384 * 384 // DEFAULT_CONFIG.macs
    placed, reason = cm.choose("matmul", shape)
    assert placed == "cpu" and "link-bound" in reason
    assert cm.cpu_seconds("matmul", shape) > 0
    # a board image without the unit never gets the op
    ulx = CostModel(DEFAULT_CONFIG, "ulx3s-85f", cpu_elements_per_s=1.0)
    assert ulx.choose("activation", {"elements": 4096}) == \
        ("cpu", "no activation unit on ulx3s-85f")


def test_bad_modes_and_values():
    with pytest.raises(ValueError, match="placement mode"):
        Executor(None, "gpu")
    with pytest.raises(ValueError, match="needs an accelerator"):
        Executor(None, "accelerator")
    with pytest.raises(ValueError, match="cpu_macs_per_s"):
        CostModel(DEFAULT_CONFIG, cpu_macs_per_s=0)
    with pytest.raises(ValueError, match="unknown board"):
        CostModel(DEFAULT_CONFIG, "nosuchboard")
    with pytest.raises(TypeError, match="int8"):
        Executor(None, "cpu").matmul("x", np.ones((2, 2)), np.ones((2, 2), np.int8))


def test_placement_table_keeps_the_op_shapes():
    ex = Executor(None, "cpu")
    _ops(ex)
    _ops(ex)
    rows = {r["op"]: r for r in ex.placement_table()}
    assert rows["mm"]["shapes"] == [{"shape": {"k": 16, "m": 4, "n": 8}, "calls": 2}]
    assert rows["act"]["shapes"] == [{"shape": {"elements": 3}, "calls": 2}]


def test_auto_places_elementwise_ops_by_cost():
    from hetaccel.host import Accelerator

    with Accelerator.open("emu") as acc:
        ex = Executor(acc, "auto")
        ex.activation_fixed16("g", "gelu", np.zeros(16, np.int64))
        assert ex.ops[-1].placed == "cpu"
        fast = CostModel(acc.config, _fast(acc.config), cpu_elements_per_s=1e3,
                         device_call_s=0.0)
        ex = Executor(acc, "auto", fast)
        out = ex.activation_fixed16("g", "gelu", np.full(4096, -4096, np.int64))
        assert ex.ops[-1].placed == "accelerator" and out.shape == (4096,)

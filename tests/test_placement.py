"""Placement: forced modes, the cost model, the per-op record."""

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hetaccel.host.planner import BoardImage, board_image, board_images, op_cost
from hetaccel.workloads.placement import CostModel, Executor
from hetaccel.spec import DEFAULT_CONFIG
from hetaccel.spec.boards import BOARDS, default_config

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
    # an image without the activation unit: the GELU is host time there
    bare = BoardImage("bare", default_config("ulx3s-85f", has_activation=False))
    s = ex.summary([board_image(None, acc.config), bare])
    assert s["projection"]["config"]["cpu_ops"] == 0
    assert s["projection"]["bare"]["cpu_ops"] == 1
    assert s["projection"]["bare"]["missing_units"] == ["activation"]
    assert s["projection"]["bare"]["macs"] == bare.config.macs


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
    bare = BoardImage("ulx3s-85f", default_config("ulx3s-85f", has_activation=False))
    ulx = CostModel(DEFAULT_CONFIG, bare, cpu_elements_per_s=1.0)
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


# --- a device without a unit ----------------------------------------------------

BARE = DEFAULT_CONFIG.replace(has_activation=False, has_adam=False)


def _adam(ex):
    rng = np.random.default_rng(1)
    p, g = (rng.standard_normal(40).astype(np.float32) for _ in range(2))
    m, v = np.zeros_like(p), np.zeros_like(p)
    for step in (1, 2):
        ex.adam_step("adam", p, g, m, v, lr=1e-2, step=step)
    return p, m, v


def test_forced_accelerator_runs_ops_without_a_unit_on_the_cpu_bit_exact():
    from hetaccel.host import Accelerator

    with Accelerator.open("emu", config=BARE) as acc:
        ex = Executor(acc, "accelerator")
        c, g = _ops(ex)
        p, m, v = _adam(ex)
        assert [r.op for r in acc.profile.ops] == ["matmul"]
    ref = Executor(None, "cpu")
    c2, g2 = _ops(ref)
    p2, m2, v2 = _adam(ref)
    for got, want in ((c, c2), (g, g2), (p, p2), (m, m2), (v, v2)):
        np.testing.assert_array_equal(got, want)
    assert [(d.kind, d.placed, d.fallback) for d in ex.ops] == [
        ("matmul", "accelerator", False), ("activation", "cpu", True),
        ("adam", "cpu", True), ("adam", "cpu", True)]
    rows = {r["op"]: r for r in ex.placement_table()}
    assert rows["mm"]["placed"] == "accelerator"
    assert (rows["act"]["placed"], rows["act"]["reason"]) == \
        ("cpu", "no activation unit on this image")
    assert (rows["adam"]["placed"], rows["adam"]["reason"], rows["adam"]["calls"]) == \
        ("cpu", "no adam unit on this image", 2)
    # the run projected onto an image that has the units: they are device time there
    full = BoardImage("full", DEFAULT_CONFIG)
    s = ex.summary([board_image(None, BARE), full])
    assert (s["projection"]["config"]["device_ops"], s["projection"]["config"]["cpu_ops"]) == (1, 3)
    assert s["projection"]["config"]["missing_units"] == ["activation", "adam"]
    assert (s["projection"]["full"]["device_ops"], s["projection"]["full"]["cpu_ops"]) == (4, 0)
    assert s["ops_on_cpu"] == 3 and s["ops_on_accelerator"] == 1


def test_the_reason_names_the_board_whose_image_the_device_is(monkeypatch):
    from hetaccel.host import Accelerator

    ice = BOARDS["icebreaker"]
    monkeypatch.setitem(BOARDS, "icebreaker", dataclasses.replace(
        ice, default={**ice.default, "has_activation": False, "has_adam": False}))
    with Accelerator.open("emu", config=default_config("icebreaker"), board="icebreaker") as acc:
        ex = Executor(acc, "accelerator")
        assert ex.device.name == "icebreaker"
        ex.activation_fixed16("act", "gelu", np.zeros(4, np.int64))
        _adam(ex)
    assert [d.reason for d in ex.ops] == ["no activation unit on icebreaker"] + \
        ["no adam unit on icebreaker"] * 2
    # a device projected onto a board whose image it is not: no board name to give
    with Accelerator.open("emu", config=BARE, board="icebreaker") as acc:
        assert Executor(acc, "accelerator").device.name == "config"


def test_auto_checks_the_devices_units_not_only_the_projected_image():
    from hetaccel.host import Accelerator

    with Accelerator.open("emu", config=BARE) as acc:
        # the projected image has the units, is fast and the CPU slow: the cost
        # model alone would send the ops to a device that cannot run them
        fast = CostModel(BARE, _fast(DEFAULT_CONFIG), cpu_elements_per_s=1e3,
                         device_call_s=0.0)
        assert fast.choose("activation", {"elements": 4096})[0] == "accelerator"
        ex = Executor(acc, "auto", fast)
        out = ex.activation_fixed16("g", "gelu", np.full(4096, -4096, np.int64))
        _adam(ex)
    assert [(d.placed, d.fallback) for d in ex.ops] == [("cpu", False)] * 3
    assert ex.ops[0].reason == "no activation unit on this image"
    want = Executor(None, "cpu").activation_fixed16("g", "gelu", np.full(4096, -4096, np.int64))
    np.testing.assert_array_equal(out, want)


def test_executor_without_a_device_takes_the_config_to_project_on():
    ex = Executor(None, "cpu", config=BARE)
    assert ex.config == BARE and ex.summary()["projection"]["config"]["has_activation"] is False
    from hetaccel.host import Accelerator

    with Accelerator.open("emu") as acc:
        with pytest.raises(ValueError, match="accelerator's own config"):
            Executor(acc, "accelerator", config=BARE)
    with pytest.raises(TypeError, match="config must be an AcceleratorConfig"):
        Executor(None, "cpu", config={"rows": 4})

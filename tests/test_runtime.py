"""The host runtime's API on the emulator and on the generated RTL.

One parametrized suite: every operation runs on ``emu`` (the device model) and
on ``rtl`` (the generated Device in Verilator through the cocotb bridge, a
small config), and must give bit-identical results on both and match NumPy /
the unit models.  One case also runs on Icarus.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hetaccel.host import Accelerator
from hetaccel.sim import activation_model as am
from hetaccel.sim.adam_model import adam_step, hyperparameters
from hetaccel.spec import AcceleratorConfig, ActivationFunction

# Float64 references that share no code with the device path (the unit models above
# are the bit-exact check; these are the numerics check)
_spec = importlib.util.spec_from_file_location("refs", Path(__file__).with_name("refs.py"))
refs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(refs)

#: Output LSB of each function on the 16-bit path (docs/numerics.md): Q1.14 for
#: sigmoid and tanh, Q4.12 otherwise.
FIXED16_LSB = {None: 2.0 ** -12, "relu": 2.0 ** -12, "sigmoid": 2.0 ** -14,
               "tanh": 2.0 ** -14, "gelu": 2.0 ** -12}

#: The rtl backend's config: small, so the Verilator build and the runs stay short,
#: and odd (acc_bits=24, 64-byte frames) so the runtime's tiling is exercised.
SMALL = AcceleratorConfig(rows=4, cols=4, input_depth=32, weight_depth=32, acc_depth=32,
                          output_depth=32, opt_depth=32, max_k=256, acc_bits=24,
                          act_param_depth=4, act_tables=3, max_payload=128)

BACKENDS = ["emu", "rtl"]
#: The tests run tiny workloads: a build that compiles 3x faster beats a faster simulator.
NATIVE_OPT = "-O0"


@pytest.fixture(scope="module")
def emu_small():
    with Accelerator.open("emu", config=SMALL) as acc:
        yield acc


@pytest.fixture(scope="module")
def rtl_small():
    with Accelerator.open("rtl", config=SMALL, sim="verilator", timeout=0.01,
                          native_opt=NATIVE_OPT) as acc:
        yield acc


@pytest.fixture
def acc(request, emu_small):
    if request.param == "emu":
        return emu_small
    return request.getfixturevalue("rtl_small")


def both(acc, emu_small, fn):
    """Run ``fn`` on the backend under test and on the emulator; they must agree bit for bit."""
    got = fn(acc)
    if acc is not emu_small:
        ref = fn(emu_small)
        np.testing.assert_array_equal(np.asarray(got).view(np.uint8),
                                      np.asarray(ref).view(np.uint8))
    return got


def _fn(name):
    return ActivationFunction[(name or "none").upper()]


@pytest.mark.parametrize("acc", BACKENDS, indirect=True)
def test_matmul_is_exact_for_any_shape(acc, emu_small):
    rng = np.random.default_rng(1)
    shapes = [(1, 1, 1), (3, 5, 7), (17, 9, 6), (40, 33, 13)]
    if acc.backend == "emu":
        shapes += [(24, 250, 10)]
    for m, k, n in shapes:
        a = rng.integers(-128, 128, (m, k), dtype=np.int8)
        b = rng.integers(-128, 128, (k, n), dtype=np.int8)
        c = both(acc, emu_small, lambda d: d.matmul(a, b))
        assert c.dtype == np.int32 and c.shape == (m, n)
        np.testing.assert_array_equal(c, a.astype(np.int64) @ b.astype(np.int64))
    # the corners of the operand range, where a product is largest
    a = np.full((5, 64), -128, dtype=np.int8)
    b = np.full((64, 3), -128, dtype=np.int8)
    np.testing.assert_array_equal(both(acc, emu_small, lambda d: d.matmul(a, b)),
                                  np.full((5, 3), 64 * 128 * 128))
    assert acc.profile.last.op == "matmul" and acc.profile.last.backend == acc.backend


@pytest.mark.parametrize("acc", BACKENDS, indirect=True)
def test_linear_int8_every_function_and_precision(acc, emu_small):
    rng = np.random.default_rng(2)
    m, k, n = 6, 11, 9
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    bias = rng.integers(-3000, 3000, n).astype(np.int32)
    scale = rng.uniform(2e-4, 2e-3, n)
    mult, shift = am.quantize_multiplier(scale)
    accv = x.astype(np.int64) @ w.T.astype(np.int64)
    # docs/numerics.md, computed here in float64: the requantised code is
    # round((acc + bias) * scale), ties away from zero, saturated; the multiplier's
    # 2**-31 relative error can move it only at a near-tie, and there is none here
    pre = (accv + bias) * scale
    assert np.all(np.abs(np.abs(pre) % 1 - 0.5) > 2.0 ** -30 * (1 + np.abs(pre)))
    code8 = np.clip(refs.round_half_away(pre), -128, 127)
    code16 = np.clip(refs.round_half_away(pre), -32768, 32767)
    for name in (None, "relu", "sigmoid", "tanh", "gelu"):
        table = am.build_table(_fn(name), 0.05, 1 / 127) if name in ("sigmoid", "tanh", "gelu") \
            else None
        y = both(acc, emu_small, lambda d: d.linear(x, w, bias, name, scale=scale,
                                                    table_scales=(0.05, 1 / 127)))
        assert y.dtype == np.int8
        np.testing.assert_array_equal(y, am.apply(accv, bias, mult, shift, _fn(name), 0, table))
        y16 = both(acc, emu_small, lambda d: d.linear(x, w, bias, name, scale=scale,
                                                      precision="fixed16"))
        assert y16.dtype == np.int16
        np.testing.assert_array_equal(y16, am.apply(accv, bias, mult, shift, _fn(name), 1))
        if name in (None, "relu"):
            np.testing.assert_array_equal(y, refs.activation(name, code8))
            np.testing.assert_array_equal(y16, refs.activation(name, code16))
        else:
            # tables hold f(0.05 * code) / (1/127) correctly rounded: <= 0.5 LSB
            want = np.clip(refs.activation(name, 0.05 * code8) * 127, -128, 127)
            assert np.abs(y - want).max() <= 0.5, name
            # the 16-bit path: <= 2 output LSB of f(Q4.12 input)
            want = refs.activation(name, code16 / 4096) / FIXED16_LSB[name]
            assert np.abs(y16 - want).max() <= 2, name


@pytest.mark.parametrize("acc", BACKENDS, indirect=True)
def test_linear_float_layer(acc, emu_small):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 12)).astype(np.float32)
    w = (rng.standard_normal((10, 12)) / 4).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    pre = x.astype(np.float64) @ w.T.astype(np.float64) + b
    # The float path quantises x per tensor and w per output channel to int8 (each
    # element within half a step, max / 254), the bias at the accumulator scale, and
    # gives the activation a Q4.12 input (2**-13) and <= 2 output LSB (or a Q4.12 output
    # of NONE/RELU at a scale that bounds |x| |w|); docs/numerics.md.  Per element:
    # |dpre| <= sum_k |x| |dw| + (|w| + |dw|) |dx| + the bias's and the output's half
    # steps; the few-percent-of-range limit below is the coarse check.
    xf = x.reshape(-1, x.shape[-1]).astype(np.float64)
    wf = w.astype(np.float64)
    dx = np.abs(xf).max() / 254
    dw = np.abs(wf).max(axis=1) / 254
    acc_unit = 2 * dx * 2 * dw
    d_pre = (np.abs(xf) @ np.broadcast_to(dw[:, None], wf.shape).T
             + dx * (np.abs(wf) + dw[:, None]).sum(axis=1) + acc_unit / 2)
    out_unit = ((np.linalg.norm(xf, axis=1).max() + np.sqrt(xf.shape[1]) * dx)
                * (np.linalg.norm(wf, axis=1) + np.sqrt(wf.shape[1]) * dw)
                + np.abs(b) + acc_unit) / 7.99
    for name in (None, "relu", "sigmoid", "tanh", "gelu"):
        y = both(acc, emu_small, lambda d: d.linear(x, w, b, name))
        assert y.dtype == np.float32 and y.shape == (2, 3, 10)
        ref = refs.activation(name, pre)
        # int8 operands: a few percent of the output range
        assert np.max(np.abs(y - ref)) <= 0.03 * max(1.0, np.max(np.abs(ref))), name
        if name in (None, "relu"):
            bound = d_pre + out_unit / 2 ** 13
        else:
            assert np.abs(pre).max() + d_pre.max() < 8          # inside Q4.12
            bound = refs.SLOPE[name] * (d_pre + 2.0 ** -13) + 2 * FIXED16_LSB[name]
        bound = bound + 2.0 ** -23 * np.abs(ref).reshape(bound.shape)
        err = np.abs(y - ref).reshape(bound.shape)
        assert np.all(err <= bound), (name, float(np.max(err / bound)))


@pytest.mark.parametrize("acc", BACKENDS, indirect=True)
def test_activation_unit_alone(acc, emu_small):
    rng = np.random.default_rng(4)
    x = rng.uniform(-7.9, 7.9, (3, 11)).astype(np.float32)
    for name in ("relu", "sigmoid", "tanh", "gelu", None):
        y = both(acc, emu_small, lambda d: d.activation(name, x))
        assert y.shape == x.shape and y.dtype == np.float32
        ref = refs.activation(name, x)
        assert np.max(np.abs(y - ref)) < 2e-3, name
        # docs/numerics.md: x rounded to Q4.12 (2**-13) through the slope, then
        # <= 2 output LSB (NONE/RELU output the Q4.12 input itself); float32 result
        lsb = 0 if name in (None, "relu") else FIXED16_LSB[name]
        bound = refs.SLOPE[name] * 2.0 ** -13 + 2 * lsb + 2.0 ** -24 * np.abs(ref)
        assert np.all(np.abs(y - ref) <= bound), name
    xi = rng.integers(-2 ** 20, 2 ** 20, (5, 3)).astype(np.int32)
    y = both(acc, emu_small, lambda d: d.activation("tanh", xi, scale=1 / 4096,
                                                    table_scales=(0.06, 1 / 127)))
    mult, shift = am.quantize_multiplier(1 / 4096)
    np.testing.assert_array_equal(
        y, am.apply(xi, 0, mult, shift, ActivationFunction.TANH, 0,
                    am.build_table(ActivationFunction.TANH, 0.06, 1 / 127)))
    # the scale is a power of two, so the code is exact; the table correctly rounded
    code = np.clip(refs.round_half_away(xi / 4096), -128, 127)
    assert np.abs(y - np.tanh(0.06 * code) * 127).max() <= 0.5


@pytest.mark.parametrize("acc", BACKENDS, indirect=True)
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_step_matches_the_unit_and_torch_formula(acc, emu_small, decoupled):
    rng = np.random.default_rng(5 + decoupled)
    n = 45 if acc.backend == "rtl" else 2000
    p = rng.standard_normal((n,)).astype(np.float32)
    g = rng.standard_normal((n,)).astype(np.float32)
    m = (rng.standard_normal((n,)) * 0.1).astype(np.float32)
    v = (np.abs(rng.standard_normal((n,))) * 0.01).astype(np.float32)
    kw = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, step=7,
              decoupled=decoupled)
    hp = hyperparameters(**kw)
    rp, rm, rv = adam_step(p, g, m, v, hp)
    fp, fm, fv = refs.adam(p, g, m, v, **kw)

    def run(d):
        pp, mm, vv = p.copy(), m.copy(), v.copy()
        out = d.adam_step(pp, g, mm, vv, **kw)
        assert out[0] is pp  # updated in place, as torch does
        return np.stack([pp, mm, vv])

    got = both(acc, emu_small, run)
    for arr, ref in zip(got, (rp, rm, rv)):
        np.testing.assert_array_equal(arr.view(np.uint32), ref.view(np.uint32))
    # Against Adam written from torch's documentation in float64 (tests/refs.py).
    # docs/adam.md: every operation a correctly rounded binary32 one, the per-step
    # error relative to the parameter's magnitude measured at most 8.3e-7, target
    # 1e-5; m' and v' are two roundings of a two-term sum (the L2 term a third) with
    # binary32 registers, so within 4 u of the terms' magnitudes.
    np.testing.assert_allclose(got[0], fp, rtol=1e-5, atol=1e-6)
    rel = np.abs(got[0] - fp) / np.maximum(np.abs(fp), np.abs(p))
    assert rel.max() <= 1e-5, rel.max()
    b1, b2 = kw["betas"]
    g1 = np.abs(g) + (0 if decoupled else kw["weight_decay"] * np.abs(p))
    u = 2.0 ** -24
    assert np.all(np.abs(got[1] - fm) <= 4 * u * (b1 * np.abs(m) + (1 - b1) * g1))
    assert np.all(np.abs(got[2] - fv) <= 4 * u * (b2 * np.abs(v) + (1 - b2) * g1 * g1))


def test_icarus_backend_runs_the_same_command_stream():
    rng = np.random.default_rng(6)
    a = rng.integers(-128, 128, (5, 9), dtype=np.int8)
    b = rng.integers(-128, 128, (9, 6), dtype=np.int8)
    with Accelerator.open("rtl", config=SMALL, sim="icarus", timeout=0.01) as acc:
        c = acc.matmul(a, b)
        assert acc.profile.last.backend == "rtl" and acc.profile.last.device_cycles > 0
    np.testing.assert_array_equal(c, a.astype(np.int64) @ b.astype(np.int64))


# --- profiler ------------------------------------------------------------------


def test_profile_reports_where_and_what_bounds_each_op(emu_small):
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, (16, 32), dtype=np.int8)
    b = rng.integers(-128, 128, (32, 8), dtype=np.int8)
    emu_small.matmul(a, b)
    rec = emu_small.profile.last
    d = rec.as_dict()
    assert d["ran_on"] == "emu" and d["shape"] == {"m": 16, "k": 32, "n": 8}
    assert d["device_cycles"] > 0 and d["busy_cycles"]["gemm"] > 0
    assert 0 < d["utilization"]["mac"] <= 1 and 0 < d["utilization"]["gemm"] <= 1
    assert d["device_bytes_in"] >= a.size + b.size and d["device_bytes_out"] >= 16 * 8 * 4
    p = d["projection"]
    assert p["bound"] in ("link", "compute")
    assert p["projected_s"] == max(p["compute_s"], p["link_s"])
    text = emu_small.profile.report()
    assert "matmul" in text and "emu" in text and "total" in text
    totals = emu_small.profile.totals()
    assert totals["device_cycles"] >= rec.device_cycles


def test_profile_projects_onto_a_named_board():
    with pytest.raises(ValueError, match="unknown board 'nosuchboard'"):
        Accelerator.open("emu", board="nosuchboard")
    with Accelerator.open("emu", board="icebreaker") as acc:
        acc.matmul(np.ones((8, 8), np.int8), np.ones((8, 8), np.int8))
        p = acc.profile.last.projection()
    from hetaccel.spec.boards import BOARDS

    board = BOARDS["icebreaker"].default
    assert p["board"] == "icebreaker"
    assert (p["clock_hz"], p["baud"]) == (board["clock_hz"], board["baud"])
    assert p["link_s"] > 0 and p["compute_s"] > 0
    # planned on the board image's own 4x4 array, not on the session's 8x8 one
    from hetaccel.host.planner import op_cost
    from hetaccel.spec.boards import default_config

    shape = {"m": 8, "k": 8, "n": 8}
    assert p["busy_cycles"] == op_cost(default_config("icebreaker"), "matmul", shape).busy_cycles
    assert p["busy_cycles"] != op_cost(acc.config, "matmul", shape).busy_cycles


def test_profile_marks_ops_the_board_image_cannot_run(monkeypatch):
    import dataclasses

    from hetaccel.spec.boards import BOARDS

    # an image without the activation unit, whatever the catalog's has
    ulx = BOARDS["ulx3s-85f"]
    monkeypatch.setitem(BOARDS, "ulx3s-85f", dataclasses.replace(
        ulx, default={**ulx.default, "has_activation": False}))
    with Accelerator.open("emu", board="ulx3s-85f") as acc:
        acc.activation("gelu", np.zeros(8, np.float32))
        p = acc.profile.last.projection()
        text = acc.profile.report()
    assert (p["projected_s"], p["bound"], p["missing_unit"]) == (None, "cpu", "activation")
    array = f"{ulx.default['rows']}x{ulx.default['cols']} array"
    assert "no activation unit" in text and array in text
    assert acc.profile.totals()["projection"]["cpu_ops"] == 1


# --- bad input --------------------------------------------------------------------


def test_bad_inputs_raise_naming_the_value(emu_small):
    acc = emu_small
    a = np.zeros((4, 5), dtype=np.int8)
    with pytest.raises(TypeError, match="float64"):
        acc.matmul(a.astype(np.float64), a.T)
    with pytest.raises(TypeError, match="list|numpy"):
        acc.matmul("abc", a)
    with pytest.raises(ValueError, match="inner dimensions"):
        acc.matmul(a, a)
    with pytest.raises(ValueError, match=r"a\[1, 2\] = 300"):
        bad = np.zeros((4, 5), dtype=np.int16)
        bad[1, 2] = 300
        acc.matmul(bad, a.T)
    with pytest.raises(ValueError, match="2-D"):
        acc.matmul(np.zeros((2, 2, 2), np.int8), a)
    with pytest.raises(ValueError, match="empty"):
        acc.matmul(np.zeros((0, 5), np.int8), a.T)
    with pytest.raises(ValueError, match="max_k=256"):
        acc.matmul(np.zeros((1, 300), np.int8), np.zeros((300, 1), np.int8))
    x = np.ones((2, 3), np.float32)
    x[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"x\[1, 1\] = nan"):
        acc.linear(x, np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="activation must be one of"):
        acc.linear(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), activation="swish")
    with pytest.raises(ValueError, match="features"):
        acc.linear(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="scale"):
        acc.linear(a, a)  # int8 path without requantisation
    with pytest.raises(ValueError, match="table"):
        acc.linear(a, a, scale=0.01, activation="gelu")
    with pytest.raises(ValueError, match=r"outside the Q4.12 range"):
        acc.activation("gelu", np.array([1.0, 9.0], np.float32))
    p = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="grads must have dtype float32"):
        acc.adam_step(p, p.astype(np.float64), p.copy(), p.copy(), lr=1e-3, step=1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        acc.adam_step(p, p.copy(), p.copy(), p.copy(), lr=-1.0, step=1)
    with pytest.raises(ValueError, match="step must be an integer >= 1"):
        acc.adam_step(p, p.copy(), p.copy(), p.copy(), lr=1e-3, step=0)
    with pytest.raises(ValueError, match="shape"):
        acc.adam_step(p, np.zeros(5, np.float32), p.copy(), p.copy(), lr=1e-3, step=1)


class _PortOpened(Exception):
    pass


def test_serial_without_a_baud_opens_at_the_images_baud(monkeypatch):
    import dataclasses

    from hetaccel.spec.boards import BOARDS, default_config

    # a board baud no other image has, so only the board's image can supply it
    ice = BOARDS["icebreaker"]
    monkeypatch.setitem(BOARDS, "icebreaker", dataclasses.replace(
        ice, default={**ice.default, "baud": 500_000}))
    opened = []

    def factory(port, *, baudrate, **kw):
        opened.append((port, baudrate))
        raise _PortOpened

    for target, kw, baud in (
            ("serial:/dev/x", {"config": SMALL.replace(baud=2_000_000)}, 2_000_000),
            ("serial:/dev/x", {"board": "icebreaker"}, 500_000),
            ("serial:/dev/x", {"board": "ulx3s-85f"}, default_config("ulx3s-85f").baud),
            ("serial:/dev/x", {}, AcceleratorConfig().baud),
            ("serial:/dev/x@115200", {"board": "icebreaker"}, 115_200)):
        with pytest.raises(_PortOpened):
            Accelerator.open(target, serial_factory=factory, **kw)
        assert opened.pop() == ("/dev/x", baud)
    with pytest.raises(ValueError, match="unknown board 'nosuch'"):
        Accelerator.open("serial:/dev/x", board="nosuch", serial_factory=factory)
    assert not opened


def test_open_rejects_bad_targets_and_configs():
    with pytest.raises(ValueError, match="target must be"):
        Accelerator.open("fpga")
    with pytest.raises(TypeError, match="config must be an AcceleratorConfig"):
        Accelerator.open("emu", config={"rows": 4})
    with pytest.raises(ValueError, match="sim must be one of"):
        Accelerator.open("rtl", config=SMALL, sim="modelsim")
    acc = Accelerator.open("emu")
    acc.close()
    with pytest.raises(ValueError, match="closed"):
        acc.matmul(np.ones((1, 1), np.int8), np.ones((1, 1), np.int8))


def test_units_absent_from_the_config_are_refused_not_emulated():
    bare = SMALL.replace(has_activation=False, has_adam=False)
    with Accelerator.open("emu", config=bare) as acc:
        # the message says what to use instead: the same numerics on the host
        with pytest.raises(ValueError, match="no activation unit.*activation_model.*Executor"):
            acc.activation("relu", np.ones(3, np.float32))
        with pytest.raises(ValueError, match="no activation unit.*matmul"):
            acc.linear(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32))
        with pytest.raises(ValueError, match="no Adam unit.*adam_model.*Executor"):
            z = np.zeros(3, np.float32)
            acc.adam_step(z, z.copy(), z.copy(), z.copy(), lr=1e-3, step=1)
        c = acc.matmul(np.ones((2, 3), np.int8), np.ones((3, 2), np.int8))
        np.testing.assert_array_equal(c, np.full((2, 2), 3))


def test_linear_with_a_one_entry_parameter_memory():
    # the plan alternates two halves of the parameter memory; with one entry
    # there is one half, and every column group's parameters go to entry 0
    cfg = AcceleratorConfig(rows=4, cols=4, act_param_depth=1)
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (6, 11), dtype=np.int8)
    w = rng.integers(-128, 128, (9, 11), dtype=np.int8)
    bias = rng.integers(-3000, 3000, 9).astype(np.int32)
    scale = rng.uniform(2e-4, 2e-3, 9)
    mult, shift = am.quantize_multiplier(scale)
    accv = x.astype(np.int64) @ w.T.astype(np.int64)
    with Accelerator.open("emu", config=cfg) as acc:
        y = acc.linear(x, w, bias, "relu", scale=scale)
    np.testing.assert_array_equal(
        y, am.apply(accv, bias, mult, shift, ActivationFunction.RELU, 0, None))


def test_rtl_at_the_boards_pace_runs_the_planners_cycles(rtl_small):
    """At a byte a cycle, a matmul's GEMMs queue back to back on the simulated
    device and stall less than the planner's GEMM run on its own; with the
    request bytes at the board's UART pace they arrive as on the board, and
    every busy counter is the planner's."""
    from hetaccel.host.planner import op_cost

    acc = rtl_small
    rng = np.random.default_rng(9)
    a = rng.integers(-128, 128, (9, 10), dtype=np.int8)
    b = rng.integers(-128, 128, (10, 14), dtype=np.int8)
    plan = op_cost(acc.config, "matmul", {"m": 9, "k": 10, "n": 14})
    assert plan.instructions["GEMM"] > 1
    acc.matmul(a, b)
    fast = acc.profile.last.busy_cycles
    assert fast["gemm"] <= plan.busy["gemm"]
    try:
        acc.transport.pace(round(acc.config.clock_hz * 10 / acc.config.baud))
        np.testing.assert_array_equal(acc.matmul(a, b), a.astype(np.int32) @ b)
        assert acc.profile.last.busy_cycles == plan.busy
    finally:
        acc.transport.pace(1)

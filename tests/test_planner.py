"""The planner: its counts are what the emulator counts and what the link carries,
and every projection uses the board image's own config."""

import dataclasses
import itertools
import json

import numpy as np
import pytest

from hetaccel.cli import main
from hetaccel.host import Accelerator
from hetaccel.host.planner import (OPS, board_image, board_images, count, gemm_plan_cost,
                                   op_cost, plan_device_gemm, profile_segments, project,
                                   project_op, table_segment, utilisation)
from hetaccel.host.transport import EmuTransport, Transport
from hetaccel.spec import DEFAULT_CONFIG, AcceleratorConfig
from hetaccel.spec.boards import BOARDS, default_config
from hetaccel.workloads.placement import Executor

SMALL = AcceleratorConfig(rows=4, cols=4, input_depth=32, weight_depth=32, acc_depth=32,
                          output_depth=32, opt_depth=32, max_k=256, acc_bits=24,
                          act_param_depth=4, act_tables=3, max_payload=128)

RNG = np.random.default_rng(3)


class CountingTransport(Transport):
    """Every byte the runtime sends and receives, counted on the way."""

    def __init__(self, inner: Transport):
        self.inner = inner
        self.kind = inner.kind
        self.sent = 0
        self.received = 0

    def send(self, data: bytes) -> None:
        self.sent += len(data)
        self.inner.send(data)

    def receive(self, timeout: float, frames: int = 1) -> bytes:
        data = self.inner.receive(timeout, frames)
        self.received += len(data)
        return data

    def close(self) -> None:
        self.inner.close()


def _open(config):
    t = CountingTransport(EmuTransport(config))
    return Accelerator(t, config), t


def _check_op(acc, t, call, op, shape, *, table=False):
    """Run ``call`` and compare every figure the planner predicts with what happened."""
    s0, r0 = t.sent, t.received
    call()
    rec = acc.profile.last
    cost = op_cost(acc.config, op, shape, table=table)
    # the link: every byte of every frame, each way, the profiler's counter reads included
    assert (t.sent - s0, t.received - r0) == (cost.bytes_in, cost.bytes_out), (op, shape)
    # the device's own counters: CYCLES adds each compute instruction's cycles (the
    # engine-level count of each GEMM), the busy counters each unit's busy cycles
    assert rec.counters["CYCLES"] == cost.cycles, (op, shape)
    assert rec.busy_cycles == cost.busy, (op, shape)
    # FRAMES runs from the first counter read to the last one (exclusive)
    assert rec.counters["FRAMES"] == cost.frames - 1, (op, shape)
    # BYTES_IN/OUT see the op, the SYNC and one of the two counter reads each way
    bare = op_cost(acc.config, op, shape, table=table, profiled=False)
    tail = count(acc.config, profile_segments()[1:])
    assert rec.device_bytes_in == bare.bytes_in + tail.bytes_in
    assert rec.device_bytes_out == bare.bytes_out + tail.bytes_out
    assert rec.utilization["mac"] == utilisation(cost.macs, cost.busy["gemm"],
                                                 acc.config.macs)
    return cost


@pytest.mark.parametrize("config", [SMALL, DEFAULT_CONFIG, default_config("ulx3s-85f")],
                         ids=["small", "default", "ulx3s-image"])
def test_gemm_counts_equal_the_emulator_and_the_link(config):
    acc, t = _open(config)
    shapes = [(1, 1, 1), (5, 9, 6), (12, 40, 10), (37, 130, 29), (70, 256, 45)]
    if config is DEFAULT_CONFIG:
        shapes += [(64, 384, 96), (3, 4096, 5)]
    resident = set()
    with acc:
        for m, k, n in shapes:
            a = RNG.integers(-128, 128, (m, k), dtype=np.int8)
            b = RNG.integers(-128, 128, (k, n), dtype=np.int8)
            out = {}
            cost = _check_op(acc, t, lambda: out.setdefault("c", acc.matmul(a, b)), "matmul",
                             {"m": m, "k": k, "n": n})
            np.testing.assert_array_equal(out["c"], a.astype(np.int64) @ b)
            assert cost.instructions["GEMM"] >= -(-k // config.rows) * -(-n // config.cols)
            resident.add(plan_device_gemm(config, m, k, n).resident)
    assert resident == {True, False}, "the shapes should cover both blockings"


def test_linear_activation_and_adam_counts_equal_the_emulator_and_the_link():
    acc, t = _open(SMALL)
    with acc:
        x = RNG.integers(-128, 128, (9, 21), dtype=np.int8)
        w = RNG.integers(-128, 128, (14, 21), dtype=np.int8)
        kw = dict(scale=1e-3, table_scales=(1 / 16, 1 / 32))
        shape = {"m": 9, "k": 21, "n": 14}
        # the first call loads the GELU table, the second finds it in place
        _check_op(acc, t, lambda: acc.linear(x, w, None, "gelu", **kw), "linear", shape,
                  table=True)
        _check_op(acc, t, lambda: acc.linear(x, w, None, "gelu", **kw), "linear", shape)
        xf = RNG.standard_normal((7, 30)).astype(np.float32)
        wf = RNG.standard_normal((5, 30)).astype(np.float32)
        _check_op(acc, t, lambda: acc.linear(xf, wf, None, "relu"), "linear",
                  {"m": 7, "k": 30, "n": 5})
        for n in (1, 50, 300):
            xa = RNG.uniform(-4, 4, n).astype(np.float32)
            _check_op(acc, t, lambda: acc.activation("tanh", xa), "activation",
                      {"elements": n})
        for n in (1, 70, 200):
            p = RNG.standard_normal(n).astype(np.float32)
            g = RNG.standard_normal(n).astype(np.float32)
            z = [np.zeros(n, np.float32), np.zeros(n, np.float32)]
            _check_op(acc, t, lambda: acc.adam_step(p, g, *z, lr=1e-3, step=1), "adam_step",
                      {"params": n})


def test_every_shape_the_runtime_accepts_is_planned():
    for config in (SMALL, DEFAULT_CONFIG, *(b.config for b in board_images()[1:])):
        for m, k, n in ((1, 1, 1), (1, config.max_k, 1), (1000, 3, 1000),
                        (513, config.max_k, 17)):
            cost = op_cost(config, "matmul", {"m": m, "k": k, "n": n})
            assert cost.macs == m * k * n and cost.busy["gemm"] > 0
        with pytest.raises(ValueError, match=f"max_k={config.max_k}"):
            op_cost(config, "matmul", {"m": 1, "k": config.max_k + 1, "n": 1})
    with pytest.raises(ValueError, match="no activation unit"):
        op_cost(default_config("icebreaker", has_activation=False), "activation",
                {"elements": 5})
    with pytest.raises(ValueError, match="op must be one of"):
        op_cost(SMALL, "conv", {"m": 1})
    with pytest.raises(ValueError, match="positive integer"):
        op_cost(SMALL, "matmul", {"m": 0, "k": 1, "n": 1})
    assert set(OPS) == {"matmul", "linear", "activation", "adam_step", "upload"}
    with pytest.raises(ValueError, match="no device memory"):
        op_cost(SMALL, "upload", {"bytes": 16})
    with pytest.raises(ValueError, match="resident weights need a device memory"):
        op_cost(SMALL, "matmul", {"m": 1, "k": 1, "n": 1}, resident=True)


def test_board_images_use_their_own_config():
    images = {b.name: b for b in board_images()}
    assert list(images) == ["config", "icebreaker", "ulx3s-85f"]
    assert images["config"].config == DEFAULT_CONFIG
    ulx, ice = images["ulx3s-85f"], images["icebreaker"]
    # each image is its catalog entry: array, clock and baud (whatever they are today)
    for img in (ulx, ice):
        d = BOARDS[img.name].default
        assert img.config == default_config(img.name)
        assert (img.macs, img.clock_hz, img.baud) == \
            (d["rows"] * d["cols"], d["clock_hz"], d["baud"])
        assert img.peak_ops_per_s == pytest.approx(2 * img.macs * d["clock_hz"])
        assert img.link_bytes_per_s == d["baud"] / 10
    assert (ulx.macs, ice.macs) == (256, 16)
    with pytest.raises(ValueError, match="unknown board 'x'"):
        board_image("x")
    # the same op costs differently on each image: its own array, memories and link
    shape = {"m": 64, "k": 384, "n": 384}
    for img in images.values():
        cost = op_cost(img.config, "matmul", shape)
        p = project_op(img, "matmul", shape)
        assert p.busy_cycles == cost.busy_cycles
        assert p.compute_s == cost.busy_cycles / img.clock_hz
        assert p.link_s == max(cost.bytes_in, cost.bytes_out) * 10 / img.baud
        assert p.seconds == max(p.compute_s, p.link_s)
        assert project(cost, img) == p
    busy = {n: op_cost(i.config, "matmul", shape).busy["gemm"] for n, i in images.items()}
    assert busy["ulx3s-85f"] < busy["config"] < busy["icebreaker"]
    # a unit the image lacks: nothing projected as device time
    p = project_op(ulx, "activation", {"elements": 100})
    assert (p.seconds, p.bound, p.missing_unit) == (None, "cpu", "activation")


def test_run_projection_replans_every_op_per_image():
    with Accelerator.open("emu") as acc:
        ex = Executor(acc, "accelerator")
        ex.layer = "layer0"
        for m, k, n in ((6, 32, 48), (12, 48, 32)):
            ex.matmul("mm", RNG.integers(-9, 9, (m, k), dtype=np.int8),
                      RNG.integers(-9, 9, (k, n), dtype=np.int8))
        ex.activation_fixed16("gelu", "gelu", np.arange(-64, 0, dtype=np.int64))
        s = ex.summary()
    for img in board_images():
        got = s["projection"][img.name]
        want = sum(project_op(img, "matmul", d.shape).seconds for d in ex.ops[:2])
        assert got["macs"] == img.macs and got["clock_hz"] == img.clock_hz
        if img.config.has_activation:
            want += project_op(img, "activation", {"elements": 64}).seconds
            assert (got["device_ops"], got["cpu_ops"]) == (3, 0)
        else:
            assert (got["device_ops"], got["cpu_ops"]) == (2, 1)
            assert got["missing_units"] == ["activation"]
        assert got["device_s"] == pytest.approx(want, rel=1e-12)
        assert s["projected_latency_s"][img.name] == got["latency_s"]


def test_a_boards_projection_is_planned_on_that_boards_image(monkeypatch):
    """Change nothing but one board's clock and units: its projection changes, and
    its cycles are the planner's on that board's config, not the run's."""
    shapes = ((6, 32, 48), (40, 96, 72))
    with Accelerator.open("emu") as acc:
        ex = Executor(acc, "accelerator")
        for m, k, n in shapes:
            ex.matmul("mm", RNG.integers(-9, 9, (m, k), dtype=np.int8),
                      RNG.integers(-9, 9, (k, n), dtype=np.int8))
        ex.activation_fixed16("gelu", "gelu", np.arange(-64, 0, dtype=np.int64))
    before = ex.summary()["projection"]

    ulx = BOARDS["ulx3s-85f"]
    has = ulx.default["has_activation"]
    monkeypatch.setitem(BOARDS, "ulx3s-85f", dataclasses.replace(ulx, default={
        **ulx.default, "clock_hz": ulx.default["clock_hz"] // 2, "has_activation": not has}))
    after = ex.summary()["projection"]

    assert after["icebreaker"] == before["icebreaker"] and after["config"] == before["config"]
    b, a = before["ulx3s-85f"], after["ulx3s-85f"]
    assert a["clock_hz"] * 2 == b["clock_hz"] and a["has_activation"] is not has
    # the GELU moves between device and host with the unit
    assert (a["device_ops"], a["cpu_ops"]) == ((3, 0) if not has else (2, 1))
    assert (b["device_ops"], b["cpu_ops"]) == ((3, 0) if has else (2, 1))
    assert a["latency_s"] != b["latency_s"]
    # busy cycles planned on the (patched) board config, not on the run's 8x8 one
    cfg = default_config("ulx3s-85f")
    busy = sum(op_cost(cfg, "matmul", {"m": m, "k": k, "n": n}).busy_cycles for m, k, n in shapes)
    if cfg.has_activation:
        busy += op_cost(cfg, "activation", {"elements": 64}).busy_cycles
    assert a["compute_s"] * a["clock_hz"] == pytest.approx(busy, rel=1e-12)
    run_busy = sum(op_cost(acc.config, "matmul", {"m": m, "k": k, "n": n}).busy_cycles
                   for m, k, n in shapes)
    assert run_busy != sum(op_cost(cfg, "matmul", {"m": m, "k": k, "n": n}).busy_cycles
                           for m, k, n in shapes)


def _report(capsys, argv):
    assert main(["report", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_quotes_each_image_and_agrees_with_a_run(tmp_path, capsys):
    r = _report(capsys, ["--tokens", "8", "--out", str(tmp_path / "png"),
                         "--boards-dir", str(tmp_path / "none")])
    for name in ("ulx3s-85f", "icebreaker"):
        img, c = r["boards"][name], default_config(name)
        assert (img["macs"], img["clock_hz"]) == (c.macs, c.clock_hz)
        assert img["peak_gops"] == pytest.approx(2 * c.macs * c.clock_hz / 1e9)
        # MiniLM's six GELU passes are host time on an image without the unit
        assert img["cpu_ops"] == (0 if c.has_activation else 6)
    assert r["boards"]["config"]["cpu_ops"] == 0
    for b in r["boards"].values():
        assert 0 < b["utilisation"] <= 1
        assert b["utilisation"] == utilisation(b["useful_macs"], b["gemm_busy"], b["macs"])

    # a run measured on the emulator: its counters and the planner give the same
    # utilisation on the run's config, by the same definition
    with Accelerator.open("emu") as acc:
        ex = Executor(acc, "accelerator")
        ex.layer = "layer0"
        for m, k, n in ((16, 64, 40), (5, 200, 24), (16, 64, 40)):
            ex.matmul("mm", RNG.integers(-9, 9, (m, k), dtype=np.int8),
                      RNG.integers(-9, 9, (k, n), dtype=np.int8))
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"placement_table": ex.placement_table()}))
    r = _report(capsys, ["--run", str(run), "--out", str(tmp_path / "png2"),
                         "--boards-dir", str(tmp_path / "none")])
    assert r["measured"]["utilisation"] == pytest.approx(r["boards"]["config"]["utilisation"],
                                                         rel=1e-12)
    assert r["measured"]["gemm_busy"] == r["boards"]["config"]["gemm_busy"]
    assert r["boards"]["ulx3s-85f"]["gemm_busy"] != r["boards"]["config"]["gemm_busy"]


# --- the schedule in closed form ---------------------------------------------------

CLOSED_FORM_CONFIGS = [
    DEFAULT_CONFIG, SMALL, default_config("icebreaker"), default_config("ulx3s-85f"),
    # odd array, 12-bit operands, a one-entry parameter memory
    AcceleratorConfig(rows=3, cols=6, operand_bits=12, acc_bits=40, input_depth=64,
                      weight_depth=16, acc_depth=16, output_depth=16, opt_depth=16, max_k=300,
                      act_param_depth=1, act_tables=2, act_lanes=3, max_payload=80),
    # a weight memory of one tile: no alternating WEIGHT halves
    AcceleratorConfig(rows=4, cols=2, input_depth=16, weight_depth=4, acc_depth=8,
                      output_depth=8, opt_depth=8, max_k=64, acc_bits=22, act_param_depth=2,
                      act_tables=1, max_payload=64),
    # device memory: resident weights fetched by LOAD
    AcceleratorConfig(device_memory="sdram32m", clock_hz=100_000_000),
    AcceleratorConfig(rows=4, cols=4, device_memory="spram128k", input_depth=64,
                      weight_depth=64, acc_depth=64, output_depth=64, max_payload=128),
]
CLOSED_FORM_SHAPES = [(1, 1, 1), (5, 9, 6), (12, 40, 10), (37, 130, 29), (70, 256, 45),
                      (17, 3, 33), (3, 4096, 5), (300, 64, 40), (130, 384, 96)]


def _closed_form_plans():
    for cfg in CLOSED_FORM_CONFIGS:
        for (m, k, n), linear in itertools.product(CLOSED_FORM_SHAPES, (False, True)):
            if linear and not cfg.has_activation:
                continue
            k = min(k, cfg.max_k)
            for at in ((None, 0, 3 * 4096) if cfg.memory is not None else (None,)):
                yield cfg, plan_device_gemm(cfg, m, k, n, linear=linear, weights_at=at)


def test_gemm_groups_describe_their_chunks_in_closed_form():
    """Each group's chunk kinds (first chunk of a kind, how many) are its
    chunks grouped by the frames they send, and every plan shape occurs:
    resident row blocks, chunked reductions, LOADs per chunk and per K-tile."""
    seen = set()
    for cfg, plan in _closed_form_plans():
        for g in plan.groups():
            every: dict = {}
            for c in map(g.chunk, range(g.n_chunks)):
                key = (c.tt, c.w_base, c.a_base, c.t0 > 0)
                every.setdefault(key, [c, 0])[1] += 1
            assert sorted(g.chunk_kinds()) == sorted(map(tuple, every.values()))
            seen.add((plan.resident, plan.KT > plan.kc,
                      None if plan.weights_at is None else g.nn == plan.NT))
    assert {(True, False, None), (False, True, None), (True, False, True),
            (False, True, False)} <= seen


def test_gemm_cost_in_closed_form_equals_the_step_by_step_count():
    """op_cost counts a GEMM plan group by group (GemmGroup.tally); that is
    exactly count() of every step of its segments, on every config and shape,
    resident weights' LOAD cycles and device-memory bytes included."""
    for cfg, plan in _closed_form_plans():
        macs = plan.M * plan.K * plan.N
        steps = count(cfg, plan.segments(), op="x", macs=macs)
        assert gemm_plan_cost(plan, op="x", macs=macs) == steps, plan
        op = "linear" if plan.linear else "matmul"
        whole = count(cfg, [table_segment(cfg, 0), *plan.segments(), *profile_segments(cfg)],
                      op=op, macs=macs)
        shape = {"m": plan.M, "k": plan.K, "n": plan.N}
        if plan.weights_at in (None, 0):
            assert op_cost(cfg, op, shape, table=True, resident=plan.weights_at == 0) == whole

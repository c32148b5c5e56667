"""cocotb tests: the device model's cycle counts equal the RTL's, instruction by instruction.

Each compute instruction runs on its own (the queue empty and the engine idle
when it arrives, a SYNC after it) over a sweep of sizes; then the RTL's busy,
stall and wait counters, read back with READ_REG, must equal the
:class:`~hetaccel.sim.device_model.DeviceModel`'s exactly, and the cycles the
device works on it (its queue not empty or its engine not idle, from the
instruction's entry to its last result written) must equal what the model
adds to ``CYCLES`` (:func:`hetaccel.spec.timing.instruction_cycles`).

Then the timing that depends on what runs before an instruction (see
:func:`~hetaccel.spec.timing.instruction_cycles`): instructions queued
behind a long ADAM, so that they start back to back -- a GEMM with its
weights loaded ahead, a load of its rows waiting for it, two GEMMs meeting the
read-modify-write hazard, an ACTIVATE waiting for the engine to drain, three
GEMMs sharing two weight banks.

The config comes from ``HETACCEL_CONFIG`` (JSON); run by tests/test_cycles_cocotb.py.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from ..sim import activation_model as am
from ..sim import adam_model
from ..spec import (COUNTERS, ActivationFunction, MemSpace, Opcode, Status, activate_flags,
                    check_instruction, encode_instruction, mem_depth, register_map)
from ..spec.timing import array_latency, busy_cycles, instruction_cycles
from .device_tests import _driver, _read_counters

#: Counters a compute instruction moves (CYCLES, BYTES_* and FRAMES are the link's too)
_COUNTED = ("GEMM_BUSY", "GEMM_STALL", "ACT_BUSY", "ACT_STALL", "ADAM_BUSY", "ADAM_STALL",
            "QUEUE_FULL", "HAZARD_WAIT")

#: Cycles the blocking ADAM must outlast the frames queued behind it by (the
#: decoder's and the queue's latency per frame, and slack)
_FRAME_CYCLES = 24


class _Activity:
    """Counts the cycles in which the device works: an instruction queued or
    running, or a row in the engine (``queue_empty`` low or ``engine.idle`` low)."""

    def __init__(self, dut):
        self.dut = dut
        self.cycles = 0
        try:
            self.engine_idle = dut.cmd.engine.idle
        except AttributeError as exc:
            raise AssertionError("the matmul engine's idle flag (cmd.engine.idle) is not "
                                 "visible in the simulation") from exc
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            if not (int(self.dut.queue_empty.value) and int(self.engine_idle.value)):
                self.cycles += 1


def _name(op, f) -> str:
    return f"{Opcode(op).name} " + " ".join(f"{k}={v}" for k, v in f.items())


async def _setup(dut):
    """A driver with operands in every scratchpad the instructions read."""
    drv = await _driver(dut)
    cfg = drv.config
    rng = np.random.default_rng(11)
    await drv.write_mem(MemSpace.INPUT, 0, rng.integers(
        cfg.operand_min, cfg.operand_max + 1, (cfg.input_depth, cfg.rows)))
    await drv.write_mem(MemSpace.WEIGHT, 0, rng.integers(
        cfg.operand_min, cfg.operand_max + 1, (cfg.weight_depth, cfg.cols)))
    if cfg.has_activation:
        mult, shift = am.quantize_multiplier(np.full(cfg.cols, 1.0 / 256))
        await drv.write_mem(MemSpace.ACT_PARAM, 0,
                            np.stack([rng.integers(-500, 500, cfg.cols), mult, shift])[None])
        table = am.build_table(ActivationFunction.SIGMOID, 1 / 16, 1 / 128)
        await drv.write_mem(MemSpace.TABLE, 0, table.reshape(-1, 1))
    if cfg.has_adam:
        n = mem_depth(cfg, MemSpace.OPT)
        state = rng.standard_normal((n, cfg.adam_lanes, 4)).astype(np.float32)
        state[..., 3] = np.abs(state[..., 3])
        await drv.write_mem(MemSpace.OPT, 0, state)
        hp = adam_model.hyperparameters(1e-3, (0.9, 0.999), 1e-8, 0.01, 1, True)
        await drv.write_regs({f"ADAM_{k.upper()}": v for k, v in hp.items()})
    regs = register_map(cfg)
    names = [n for n, _ in COUNTERS if n in _COUNTED and n in regs]
    return drv, names


def _gemm(m, flags=0, acc_addr=0):
    return Opcode.GEMM, {"a_addr": 0, "w_addr": 0, "acc_addr": acc_addr, "m": m, "flags": flags}


def _activate(m, precision=0):
    fn = ActivationFunction.SIGMOID if precision == 0 else ActivationFunction.GELU
    return Opcode.ACTIVATE, {"acc_addr": 0, "out_addr": 0, "m": m, "param_entry": 0,
                             "function": int(fn), "flags": activate_flags(precision, 0)}


def _adam(count):
    return Opcode.ADAM, {"addr": 0, "count": count}


def _sweep(cfg) -> list:
    """Isolated instructions: GEMM rows 1 to beyond the hazard window and the
    whole INPUT, ACTIVATE both precisions, ADAM from one OPT word to all."""
    out = []
    for i, m in enumerate(sorted({1, 2, 3, 4, 5, 7, cfg.input_depth})):
        if m <= min(cfg.input_depth, cfg.acc_depth):
            out.append(_gemm(m, flags=i & 1))
    if cfg.has_activation:
        for i, m in enumerate(sorted({1, 2, 5, cfg.acc_depth})):
            out.append(_activate(m, precision=i & 1))
    if cfg.has_adam:
        n = mem_depth(cfg, MemSpace.OPT)
        for c in sorted({1, 2, 5, 17, n}):
            if c <= n:
                out.append(_adam(c))
    return out


@cocotb.test()
async def isolated_instructions(dut):
    """Every counter and the device's working cycles of one instruction at a
    time equal the model's, exactly, over a sweep of sizes."""
    drv, names = await _setup(dut)
    activity = _Activity(dut)
    errors = []
    for op, f in _sweep(drv.config):
        await drv.write_regs({"CONTROL": 1})
        start = activity.cycles
        await drv.request(op, encode_instruction(op, **f))
        await drv.request(Opcode.SYNC)
        rtl = await _read_counters(drv, names)
        model = {n: drv.model.counters[n] for n in names}
        rtl["cycles"] = activity.cycles - start
        model["cycles"] = drv.model.counters["CYCLES"]
        dut._log.info("%s: RTL %s", _name(op, f), rtl)
        errors += [f"{_name(op, f)}: {n} RTL {rtl[n]}, model {model[n]}"
                   for n in rtl if rtl[n] != model[n]]
    assert not errors, "cycle counts differ from the device model:\n" + "\n".join(errors)


async def _queued(drv, names, frames, n_blocker, *, waits=False):
    """``frames`` (op, fields) in one burst behind an ADAM over ``n_blocker``
    OPT words that outlasts it, so they start back to back; the counters.
    ``waits``: a load or store among them waits for a queued instruction."""
    cfg = drv.config
    blocker = _adam(n_blocker)
    burst = [blocker] + list(frames)
    for op, f in burst:
        assert check_instruction(cfg, op, encode_instruction(op, **f)) == Status.OK, burst
    wire = [drv.frame(op, encode_instruction(op, **f)) for op, f in burst]
    after = sum(len(w) + _FRAME_CYCLES for w in wire[1:])
    assert after < instruction_cycles(cfg, *blocker), (
        f"the ADAM ({instruction_cycles(cfg, *blocker)} cycles) ends before "
        f"the {after} cycles of the frames behind it")
    await drv.write_regs({"CONTROL": 1})
    await drv.send(b"".join(wire))
    await drv.request(Opcode.SYNC)
    got = await _read_counters(drv, names)
    assert got["QUEUE_FULL"] == 0 and (got["HAZARD_WAIT"] > 0) == waits, (
        f"{[_name(op, f) for op, f in burst]}: waits {got}")
    want = busy_cycles(cfg, *blocker)
    assert got["ADAM_BUSY"] == want, (
        f"ADAM count={n_blocker} in front: ADAM_BUSY RTL {got['ADAM_BUSY']}, model {want}")
    return got


def _check(errors, what, got, want):
    for k, v in want.items():
        if got[k] != v:
            errors.append(f"{what}: {k} RTL {got[k]}, expected {v}")


@cocotb.test()
async def queued_instructions(dut):
    """Instructions that start right behind others: the timing documented in
    spec.timing.instruction_cycles, exactly."""
    drv, names = await _setup(dut)
    cfg = drv.config
    if not cfg.has_adam or cfg.cmd_queue_depth < 3:
        return      # nothing keeps two instructions queued behind a third
    n = mem_depth(cfg, MemSpace.OPT)
    L = array_latency(cfg)
    errors = []
    third_waited = False
    # (the second of two GEMMs may start at the first's last row)
    for m in sorted({1, 2, 3, 5, min(cfg.input_depth, (cfg.acc_depth + 1) // 2)}):
        # weights loaded while the ADAM ran: a row every cycle
        got = await _queued(drv, names, [_gemm(m)], n)
        _check(errors, f"GEMM m={m} behind an ADAM", got,
               {"GEMM_BUSY": m + 1, "GEMM_STALL": 0})
        # a read of the INPUT (its port) waits for the GEMM, never the reverse
        got = await _queued(drv, names, [_gemm(m), (Opcode.READ_MEM, {
            "space": int(MemSpace.INPUT), "addr": 0, "count": m})], n, waits=True)
        _check(errors, f"GEMM m={m} behind an ADAM, then a READ_MEM of its rows", got,
               {"GEMM_BUSY": m + 1, "GEMM_STALL": 0})
        # back to back into the rows of the first, its last row among them
        # when the second starts at acc_addr m - 1: held one cycle (hazard),
        # which delays the issue of a third row
        if m >= 2:
            for acc, held in ((m - 2, 0), (m - 1, 1)):
                got = await _queued(drv, names, [_gemm(m), _gemm(m, 1, acc)], n)
                _check(errors, f"GEMM m={m}, then GEMM m={m} accumulating at {acc}", got,
                       {"GEMM_STALL": held, "GEMM_BUSY": 2 * (m + 1) + (held if m >= 3 else 0)})
        if cfg.has_activation:
            # the ACTIVATE waits for the GEMM's last row to land
            got = await _queued(drv, names, [_gemm(m), _activate(m)], n)
            _check(errors, f"ACTIVATE m={m} behind a GEMM m={m}", got,
                   {"GEMM_BUSY": m + 1,
                    "ACT_BUSY": busy_cycles(cfg, *_activate(m)) + L + 1})
        if cfg.cmd_queue_depth >= 4:
            # the third GEMM's weights wait for the first's bank: only its
            # rows' waits (GEMM_STALL) add to GEMM_BUSY, the last row's not
            got = await _queued(drv, names, [_gemm(m), _gemm(m, 0, 0), _gemm(m)], n)
            _check(errors, f"three GEMMs m={m}", got,
                   {"GEMM_BUSY": 3 * (m + 1) + (got["GEMM_STALL"] if m >= 3 else 0)})
            third_waited |= got["GEMM_STALL"] > 0
        dut._log.info("queued m=%d: RTL %s", m, got)
    assert not errors, "queued timing differs from spec.timing:\n" + "\n".join(errors)
    assert third_waited or cfg.cmd_queue_depth < 4, "no third GEMM waited for its weights"


"""cocotb tests of the command processor's hazard rules at every edge of a queued range.

A GEMM, ACTIVATE or ADAM (the *target*) is queued behind long *blockers*
that touch none of the memory under test; then one WRITE_MEM or READ_MEM of
a space the target uses arrives, placed at an edge of the target's rows in
that space (:data:`PLACES`: ending one row before its first row or at it,
starting at its last row or one after it, a single row at either end, fully
inside, fully covering).  The blockers outlast the frames after them, so
the access is decided while the target is still queued.

Every reply byte is compared with :class:`~hetaccel.sim.device_model.DeviceModel`
(which runs each instruction at once, in order), and so are the rows the
target wrote after each case and, at the end, every row any case touched.
An access let through too early lands before the target reads its rows, or
reads rows the target has not written yet, so a reply differs from the
model's.  Some early accesses change no byte (a WEIGHT row the weight feeder
had already fetched, a read of a row nobody changes), so each case also
reads HAZARD_WAIT: it must count cycles exactly when the rules of
docs/isa.md ("Ordering and hazards", :data:`RULES`) make the access conflict
with the target, and none otherwise (the blockers conflict with nothing).

The config comes from ``HETACCEL_CONFIG`` (JSON); run by
tests/test_hazards_cocotb.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cocotb
import numpy as np

from ..sim import activation_model as am
from ..sim import adam_model
from ..sim.device_model import DeviceModel
from ..spec import (INSTRUCTIONS, AcceleratorConfig, ActivationFunction, MemSpace, Opcode,
                    activate_flags, encode_instruction, mem_depth, mem_readable, mem_word,
                    pack_words, register_map)
from ..spec.link import ReplyDecoder
from ..spec.timing import instruction_cycles, row_schedule
from .device_tests import DeviceDriver

#: (target, space, write) -> "always" (the access waits whatever its rows) or
#: "overlap" (only if its rows meet the target's rows in that space): the
#: table of docs/isa.md, "Ordering and hazards".
RULES: dict[tuple[Opcode, MemSpace, bool], str] = {
    (Opcode.GEMM, MemSpace.INPUT, True): "overlap",
    (Opcode.GEMM, MemSpace.INPUT, False): "always",      # shared read port
    (Opcode.GEMM, MemSpace.WEIGHT, True): "overlap",
    (Opcode.GEMM, MemSpace.WEIGHT, False): "always",     # shared read port
    (Opcode.GEMM, MemSpace.ACC, True): "always",
    (Opcode.GEMM, MemSpace.ACC, False): "overlap",
    (Opcode.ACTIVATE, MemSpace.ACC, True): "always",
    (Opcode.ACTIVATE, MemSpace.ACC, False): "always",
    (Opcode.ACTIVATE, MemSpace.OUTPUT, True): "always",
    (Opcode.ACTIVATE, MemSpace.OUTPUT, False): "overlap",
    (Opcode.ACTIVATE, MemSpace.TABLE, True): "always",
    (Opcode.ACTIVATE, MemSpace.ACT_PARAM, True): "always",
    (Opcode.ADAM, MemSpace.OPT, True): "always",
    (Opcode.ADAM, MemSpace.OPT, False): "always",
}

#: Where an access sits against target rows ``lo .. hi`` (``n`` rows):
#: (name, (first row, rows)).  The first four are both sides of the two
#: ends of the overlap compare.
PLACES = (
    ("ends one row before the first", lambda lo, hi, n: (lo - 2, 2)),
    ("ends at the first", lambda lo, hi, n: (lo - 2, 3)),
    ("starts at the last", lambda lo, hi, n: (hi, 3)),
    ("starts one row after the last", lambda lo, hi, n: (hi + 1, 2)),
    ("is the first", lambda lo, hi, n: (lo, 1)),
    ("is the last", lambda lo, hi, n: (hi, 1)),
    ("lies inside", lambda lo, hi, n: (lo + 1, n - 2)),
    ("covers all", lambda lo, hi, n: (lo - 1, n + 2)),
)

#: The targets' fields; every place exists in every space of
#: tests/test_hazards_cocotb.py's config.
GEMM_TARGET = {"a_addr": 40, "w_addr": 8, "acc_addr": 20, "m": 4, "flags": 1}
ACT_TABLE_SLOT = 1
ACT_TARGET = {"acc_addr": 32, "out_addr": 12, "m": 4, "param_entry": 3,
              "function": int(ActivationFunction.SIGMOID),
              "flags": activate_flags(0, ACT_TABLE_SLOT)}
ADAM_TARGET = {"addr": 40, "count": 4}


def targets(cfg: AcceleratorConfig) -> dict[Opcode, tuple[dict, dict[MemSpace, tuple[int, int]]]]:
    """Target opcode -> (its fields, {space: (first row, rows)} it touches)."""
    g, a, d = GEMM_TARGET, ACT_TARGET, ADAM_TARGET
    return {
        Opcode.GEMM: (g, {MemSpace.INPUT: (g["a_addr"], g["m"]),
                          MemSpace.WEIGHT: (g["w_addr"], cfg.rows),
                          MemSpace.ACC: (g["acc_addr"], g["m"])}),
        Opcode.ACTIVATE: (a, {MemSpace.ACC: (a["acc_addr"], a["m"]),
                              MemSpace.OUTPUT: (a["out_addr"], a["m"]),
                              MemSpace.TABLE: (256 * ACT_TABLE_SLOT, 256),
                              MemSpace.ACT_PARAM: (a["param_entry"], 1)}),
        Opcode.ADAM: (d, {MemSpace.OPT: (d["addr"], d["count"])}),
    }


@dataclass(frozen=True)
class Case:
    target: Opcode
    space: MemSpace
    write: bool
    place: str
    addr: int
    count: int
    rows: tuple[int, int]       # the target's (first row, rows) in ``space``
    overlap: bool
    conflict: bool

    def __str__(self) -> str:
        lo, n = self.rows
        return (f"{'WRITE_MEM' if self.write else 'READ_MEM'} {self.space.name} "
                f"{self.addr}..{self.addr + self.count - 1} ({self.place} of the queued "
                f"{self.target.name}'s rows {lo}..{lo + n - 1})")


def hazard_cases(cfg: AcceleratorConfig) -> list[Case]:
    """Every (target, space it touches, write or read, place) that ``cfg``
    can express: rows inside the memory, a frame within ``max_payload``."""
    out = []
    for op, (_, ranges) in targets(cfg).items():
        for space, (lo, n) in ranges.items():
            hi = lo + n - 1
            wb = mem_word(cfg, space).bytes
            for write in (True, False):
                if not write and not mem_readable(cfg, space):
                    continue
                seen = set()
                for place, where in PLACES:
                    addr, count = where(lo, hi, n)
                    fixed = INSTRUCTIONS[Opcode.WRITE_MEM].fixed_bytes if write else 0
                    if (addr, count) in seen or count < 1 or addr < 0 or \
                            addr + count > mem_depth(cfg, space) or \
                            fixed + count * wb > cfg.max_payload:
                        continue
                    seen.add((addr, count))
                    overlap = addr <= hi and lo < addr + count
                    rule = RULES[(op, space, write)]
                    out.append(Case(op, space, write, place, addr, count, (lo, n), overlap,
                                    rule == "always" or overlap))
    return out


#: Cycles the blockers outlast the frames after them by (the hazard check's
#: pipeline, and slack)
_MARGIN = 32
#: Cycles a compute frame costs beyond its bytes: decoding, queueing and its
#: 7-byte reply (one byte per two cycles), which the driver awaits
_FRAME_CYCLES = 32


def _blockers(cfg: AcceleratorConfig, target: Opcode, after: int) -> list[tuple[Opcode, dict]]:
    """Instructions in front of the target that conflict with no access of
    its cases and run for ``after`` more cycles than their own frames take:
    ADAMs over OPT (one as short as will do), or, in front of an ADAM, GEMMs
    over INPUT; at most a queue full with the target."""
    if target == Opcode.ADAM:
        m = min(cfg.input_depth, cfg.acc_depth)
        one = (Opcode.GEMM, {"a_addr": 0, "w_addr": 0, "acc_addr": 0, "m": m, "flags": 0})
    else:
        one = (Opcode.ADAM, {"addr": 0, "count": mem_depth(cfg, MemSpace.OPT)})
    k = 1
    while _spare(cfg, [one] * k) < after + _MARGIN and k < cfg.cmd_queue_depth - 1:
        k += 1
    if k == 1 and target != Opcode.ADAM:
        count = _frame_cycles(one) + after + _MARGIN - instruction_cycles(
            cfg, Opcode.ADAM, {"count": 0})
        return [(Opcode.ADAM, {"addr": 0, "count": max(1, min(count, one[1]["count"]))})]
    return [one] * k


def _spare(cfg: AcceleratorConfig, blockers: list[tuple[Opcode, dict]]) -> int:
    """Cycles the blockers keep the queue busy beyond their own frames (GEMMs
    stream back to back: until the last one's last row has entered the engine)."""
    if blockers[0][0] == Opcode.GEMM:
        busy = row_schedule(cfg, [f["m"] for _, f in blockers])[-1] + 1
    else:
        busy = sum(instruction_cycles(cfg, *b) for b in blockers)
    return busy - sum(_frame_cycles(b) for b in blockers)


def _frame_cycles(instr: tuple[Opcode, dict]) -> int:
    op, fields = instr
    return 7 + len(encode_instruction(op, **fields)) + _FRAME_CYCLES


def _verdict_cycles(cfg: AcceleratorConfig, case: Case, payload: bytes) -> int:
    """Cycles from an access frame's first byte to its hazard verdict, at
    most: its bytes, then a WRITE_MEM's words are counted by repeated
    subtraction, one per cycle, when some word size is not a power of two
    (within _FRAME_CYCLES otherwise)."""
    return 7 + len(payload) + _FRAME_CYCLES + (case.count if case.write else 0)


def _random_words(cfg: AcceleratorConfig, space: MemSpace, n: int, rng) -> np.ndarray:
    """``n`` words of ``space`` that make a visible difference when written."""
    word = mem_word(cfg, space)
    if space in (MemSpace.INPUT, MemSpace.WEIGHT):
        return rng.integers(cfg.operand_min, cfg.operand_max + 1, (n,) + word.shape)
    if space == MemSpace.ACC:
        return rng.integers(-(1 << 14), 1 << 14, (n,) + word.shape)
    if space == MemSpace.OUTPUT:
        return rng.integers(-(1 << 15), 1 << 15, (n,) + word.shape)
    if space == MemSpace.TABLE:
        return rng.integers(-128, 128, (n, 1))
    if space == MemSpace.ACT_PARAM:
        mult, shift = am.quantize_multiplier(rng.uniform(1 / 256, 1 / 64, (n, cfg.cols)))
        bias = rng.integers(-2000, 2000, (n, cfg.cols))
        return np.stack([bias, mult, shift], axis=1)
    if space == MemSpace.OPT:
        w = rng.standard_normal((n,) + word.shape).astype(np.float32)
        w[..., 3] = np.abs(w[..., 3])
        return w
    raise ValueError(space)  # pragma: no cover


def _access(cfg: AcceleratorConfig, case: Case, rng) -> tuple[Opcode, bytes]:
    """The case's WRITE_MEM (random words) or READ_MEM: (opcode, payload)."""
    if case.write:
        data = pack_words(cfg, case.space, _random_words(cfg, case.space, case.count, rng))
        return Opcode.WRITE_MEM, encode_instruction(
            Opcode.WRITE_MEM, space=int(case.space), addr=case.addr, data=data)
    return Opcode.READ_MEM, encode_instruction(
        Opcode.READ_MEM, space=int(case.space), addr=case.addr, count=case.count)


class HazardDriver(DeviceDriver):
    """A DeviceDriver that also reads a timing-dependent counter."""

    async def counter(self, name: str) -> int:
        """Read a counter without comparing it with the model (whose
        prediction stays the record, so the reply streams stay aligned)."""
        regs = register_map(self.config)
        fr = self.frame(Opcode.READ_REG, encode_instruction(
            Opcode.READ_REG, {"reg": regs[name].addr}))
        reply = await self.send(fr, compare=False)
        payload = ReplyDecoder(self.config.max_payload).feed(reply)[0].payload
        return int.from_bytes(payload[:4], "little")


def _config() -> AcceleratorConfig:
    return AcceleratorConfig.from_json(os.environ["HETACCEL_CONFIG"])


#: One model per simulation: the tests share the DUT, whose reset clears
#: registers but not the scratchpads.
_MODEL: list[DeviceModel] = []


async def _driver(dut) -> HazardDriver:
    drv = HazardDriver(dut, _config())
    fresh = not _MODEL
    if fresh:
        _MODEL.append(drv.model)
    else:
        drv.model = _MODEL[0]
        drv.model.reset()
    await drv.start()
    if fresh:
        await _fill(drv, np.random.default_rng(10))
    return drv


def _windows(cfg: AcceleratorConfig) -> dict[MemSpace, tuple[int, int]]:
    """Per readable space, (first row, rows) covering every case and target."""
    spans: dict[MemSpace, list[int]] = {}
    for c in hazard_cases(cfg):
        for a, n in ((c.addr, c.count), c.rows):
            lo, hi = spans.get(c.space, [a, a + n])
            spans[c.space] = [min(lo, a), max(hi, a + n)]
    return {s: (lo, hi - lo) for s, (lo, hi) in spans.items() if mem_readable(cfg, s)}


async def _fill(drv: HazardDriver, rng) -> None:
    """Random rows wherever the cases and targets are, so a result differs
    from the rows it overwrites; Adam hyperparameters."""
    cfg = drv.config
    for space in (MemSpace.INPUT, MemSpace.WEIGHT):
        await drv.write_mem(space, 0, _random_words(cfg, space, mem_depth(cfg, space), rng))
    for space, (lo, n) in _windows(cfg).items():
        if space not in (MemSpace.INPUT, MemSpace.WEIGHT):
            await drv.write_mem(space, lo, _random_words(cfg, space, n, rng))
    await drv.write_mem(MemSpace.ACT_PARAM, 0,
                        _random_words(cfg, MemSpace.ACT_PARAM, cfg.act_param_depth, rng))
    table = am.build_table(ActivationFunction.SIGMOID, 1 / 16, 1 / 128)
    await drv.write_mem(MemSpace.TABLE, 256 * ACT_TABLE_SLOT, table.reshape(-1, 1))
    hp = adam_model.hyperparameters(1e-2, (0.9, 0.999), 1e-8, 0.01, 3, True)
    await drv.write_regs({f"ADAM_{k.upper()}": v for k, v in hp.items()})


async def _run_cases(dut, target: Opcode, seed: int) -> None:
    drv = await _driver(dut)
    cfg = drv.config
    rng = np.random.default_rng(seed)
    fields, ranges = targets(cfg)[target]
    cases = [c for c in hazard_cases(cfg) if c.target == target]
    assert cases
    # HAZARD_WAIT counts only while a load/store waits: between the cases
    # (after a SYNC) nothing does, so its differences are the cases' waits
    waited = await drv.counter("HAZARD_WAIT")
    for case in cases:
        if target == Opcode.ACTIVATE:
            # OUTPUT rows unlike those the ACTIVATE writes, so an early read shows
            lo, n = ranges[MemSpace.OUTPUT]
            await drv.write_mem(MemSpace.OUTPUT, lo, _random_words(cfg, MemSpace.OUTPUT, n, rng))
        # One frame at a time (a burst of short frames can find the link's
        # buffers full and be answered BUSY); the blockers outlast them all, so
        # the access is decided while the target is still queued behind them.
        op, payload = _access(cfg, case, rng)
        after = _frame_cycles((target, fields)) + _verdict_cycles(cfg, case, payload)
        head = _blockers(cfg, target, after)
        busy = _spare(cfg, head)
        assert busy >= after + _MARGIN, (
            f"{case}: blockers of {busy} cycles are too short for this config")
        try:
            for b in head + [(target, fields)]:
                await drv.request(b[0], encode_instruction(b[0], **b[1]))
            await drv.send(drv.frame(op, payload))
        except AssertionError as e:
            raise AssertionError(f"{case}: {e}") from None
        now = await drv.counter("HAZARD_WAIT")
        waits, waited = (now - waited) & 0xFFFFFFFF, now
        await drv.request(Opcode.SYNC)
        if case.write:
            # the rows the target wrote (the model comparison checks them)
            out = {Opcode.GEMM: (MemSpace.ACC, fields.get("acc_addr")),
                   Opcode.ACTIVATE: (MemSpace.OUTPUT, fields.get("out_addr")),
                   Opcode.ADAM: (MemSpace.OPT, fields.get("addr"))}[target]
            try:
                await drv.read_mem(*out, fields.get("m", fields.get("count")))
            except AssertionError as e:
                raise AssertionError(f"after {case}: {e}") from None
        assert (waits > 0) == case.conflict, (
            f"{case}: waited {waits} cycles, expected {'some' if case.conflict else 'none'}")
    for space, (lo, n) in _windows(cfg).items():
        try:
            await drv.read_mem(space, lo, n)
        except AssertionError as e:
            raise AssertionError(f"{space.name} rows {lo}..{lo + n - 1} at the end: {e}") from None
    await drv.settle()


@cocotb.test()
async def gemm_hazards(dut):
    """Loads and stores at every edge of a queued GEMM's INPUT, WEIGHT and ACC rows."""
    await _run_cases(dut, Opcode.GEMM, 11)


@cocotb.test()
async def activate_hazards(dut):
    """Loads and stores at every edge of a queued ACTIVATE's ACC, OUTPUT,
    TABLE and ACT_PARAM rows."""
    await _run_cases(dut, Opcode.ACTIVATE, 12)


@cocotb.test()
async def adam_hazards(dut):
    """Loads and stores at every edge of a queued ADAM's OPT words."""
    await _run_cases(dut, Opcode.ADAM, 13)

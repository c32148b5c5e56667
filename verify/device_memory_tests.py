"""cocotb tests of a whole Device with device memory: the SDRAM controller and
the DMA engine behind the byte protocol, the chip model on the pins.

Every request goes through ``rx`` as bytes, every reply byte on ``tx`` is
compared with :class:`hetaccel.sim.device_model.DeviceModel` fed the same
bytes (:class:`~hetaccel.verify.device_tests.DeviceDriver`), and
:class:`~hetaccel.verify.sdram_chip.SdramChipModel` on the SDRAM pins stores
the lines and fails the test on any datasheet rule the controller breaks.

One cocotb test runs these phases in order on one device and one chip (the
chip's state runs on from phase to phase, as on a board; a failure names its
phase):

* ``device_lines``: WRITE_MEM / READ_MEM of DEVICE lines across banks, rows
  and the end of the memory;
* ``every_space``: a LOAD into and a STORE out of every space that moves, each
  read back (LOAD) or its DEVICE lines read back (STORE);
* ``queued_in_order``: behind a long LOAD, a LOAD, GEMM, LOAD of the same
  WEIGHT rows, accumulating GEMM, STORE of ACC, ACTIVATE, STORE of OUTPUT, all
  queued at once, then a WRITE_MEM of the INPUT rows a queued LOAD fills: the
  results equal the in-order model's, so the weight feeder waited at the
  LOAD's barrier and the front end for the LOAD (HAZARD_WAIT counts it);
* ``statuses``: every LOAD / STORE check (space, range, alignment, the store's
  end) answers what the model answers;
* ``counters``: DMA_BYTES_IN / DMA_BYTES_OUT exact; DMA_BUSY of transfers run
  one at a time within the stated bound of the model's.

Environment: ``HETACCEL_CONFIG`` (the config, JSON), ``SDRAM_CHIP`` (the part
the chip model plays) and ``SDRAM_POWER_UP`` (the shortened power-up wait the
Device was generated with).  Run by tests/test_device_memory_cocotb.py.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np

from ..sim import activation_model as am
from ..spec import (AcceleratorConfig, ActivationFunction, MemSpace, Opcode, Status,
                    activate_flags, dma_spaces, encode_instruction, mem_depth, mem_readable,
                    mem_word, pack_words)
from ..spec.device_memory import sdram_timing
from ..spec.sdram import CHIPS
from ..spec.timing import dma_cycles, dma_lines
from .checking import assert_bit_exact
from .device_tests import DeviceDriver, _read_counters
from .dma_tests import words_per_line
from .sdram_chip import SdramChipBus, SdramChipModel

LINE = 16

async def _driver(dut) -> tuple[DeviceDriver, SdramChipBus]:
    """Clock, reset and the chip model on the pins (its power-up wait as
    short as the Device's)."""
    cfg = AcceleratorConfig.from_json(os.environ["HETACCEL_CONFIG"])
    chip = SdramChipModel(CHIPS[os.environ["SDRAM_CHIP"]], cfg.clock_hz,
                          cas_latency=sdram_timing(cfg.memory, cfg.clock_hz).cas_latency,
                          power_up_cycles=int(os.environ["SDRAM_POWER_UP"]))
    drv = DeviceDriver(dut, cfg)
    await drv.start()
    bus = SdramChipBus(dut, chip)
    bus.start()
    return drv, bus


@cocotb.test()
async def device_with_sdram(dut):
    """The phases below, in order (see the module docstring)."""
    drv, bus = await _driver(dut)
    for phase in (device_lines, every_space, queued_in_order, statuses, counters):
        dut._log.info("phase %s: %s", phase.__name__, phase.__doc__.splitlines()[0])
        try:
            await phase(drv)
            await drv.settle()
        except AssertionError as e:
            bus.check()          # a broken datasheet rule is the first failure
            raise AssertionError(f"phase {phase.__name__}: {e}") from e
        bus.check()


async def _fill_device(drv, line: int, data: bytes):
    """WRITE_MEM of DEVICE lines from ``line`` on (as many frames as it takes)."""
    per = (drv.config.max_payload - 5) // LINE
    for i in range(0, len(data) // LINE, per):
        await drv.request(Opcode.WRITE_MEM, encode_instruction(
            Opcode.WRITE_MEM, space=int(MemSpace.DEVICE), addr=line + i,
            data=data[i * LINE:(i + per) * LINE]))


async def _read_device(drv, line: int, n: int) -> bytes:
    per = drv.config.max_payload // LINE
    out = b""
    for i in range(0, n, per):
        out += await drv.request(Opcode.READ_MEM, encode_instruction(
            Opcode.READ_MEM, space=int(MemSpace.DEVICE), addr=line + i, count=min(per, n - i)))
    return out


def _transfer(op, space, addr, dram_addr, count) -> bytes:
    return encode_instruction(op, space=int(space), addr=addr, dram_addr=dram_addr, count=count)


def _random_words(cfg, space, n, rng) -> np.ndarray:
    w = mem_word(cfg, space)
    if space == MemSpace.OPT:
        return rng.standard_normal((n,) + w.shape).astype(np.float32)
    lo, hi = -(1 << (w.width - 1)), (1 << (w.width - 1)) - 1
    return rng.integers(lo, hi + 1, (n,) + w.shape)


def _lines_of(cfg, space, count) -> int:
    return count * mem_word(cfg, space).bytes // LINE


async def device_lines(drv):
    """WRITE_MEM / READ_MEM of DEVICE: bank and row boundaries, the last lines."""
    cfg = drv.config
    rng = np.random.default_rng(11)
    lines = cfg.memory.lines
    chip = CHIPS[os.environ["SDRAM_CHIP"]]
    per_row = chip.cols // 8                     # lines in one row of one bank
    starts = [0, per_row - 2, chip.rows * per_row - 1, lines // 2 - 1, lines - 4]
    for start in starts:
        data = rng.integers(0, 256, 4 * LINE, dtype=np.uint8).tobytes()
        await _fill_device(drv, start, data)
    for start in starts:
        got = await _read_device(drv, start, 4)      # compared with the model's bytes
        assert len(got) == 4 * LINE
    # a READ_MEM of DEVICE past the end, and a WRITE_MEM of part of a line
    await drv.request(Opcode.READ_MEM, encode_instruction(
        Opcode.READ_MEM, space=int(MemSpace.DEVICE), addr=lines - 1, count=2),
        expect=Status.ADDR_RANGE)
    await drv.request(Opcode.WRITE_MEM, encode_instruction(
        Opcode.WRITE_MEM, space=int(MemSpace.DEVICE), addr=0, data=bytes(LINE + 8)),
        expect=Status.BAD_LENGTH)


async def every_space(drv):
    """LOAD into and STORE out of every space that moves, at odd offsets."""
    cfg = drv.config
    rng = np.random.default_rng(12)
    base = 4096                                  # DEVICE line of this test's data
    for space in sorted(dma_spaces(cfg, Opcode.LOAD)):
        depth = mem_depth(cfg, space)
        k = words_per_line(cfg, space)
        count = max(k, (depth // 2) // k * k)
        addr = depth - count
        words = _random_words(cfg, space, count, rng)
        if space == MemSpace.ACT_PARAM:
            words[:, 1] &= (1 << 31) - 1                       # multiplier bits
            words[:, 2] = rng.integers(0, 40, words[:, 2].shape)   # shift
        data = pack_words(cfg, space, words)
        await _fill_device(drv, base, data)
        await drv.request(Opcode.LOAD, _transfer(Opcode.LOAD, space, addr, base * LINE, count))
        await drv.request(Opcode.SYNC)
        if mem_readable(cfg, space):
            got = await drv.read_mem(space, 0, depth)            # compared with the model
            want = drv.model.mem[space][addr:]
            if space == MemSpace.OPT:
                want = want.view(np.float32)
            assert_bit_exact(want, got[addr:], f"{space.name} after LOAD")
        base += _lines_of(cfg, space, count) + 2
    # ACT_PARAM is write-only: an ACTIVATE with the loaded parameters shows them
    if MemSpace.ACT_PARAM in dma_spaces(cfg, Opcode.LOAD):
        for entry in range(cfg.act_param_depth):
            await drv.request(Opcode.ACTIVATE, encode_instruction(
                Opcode.ACTIVATE, acc_addr=0, out_addr=0, m=2, param_entry=entry,
                function=int(ActivationFunction.RELU), flags=activate_flags(1, 0)))
            await drv.read_mem(MemSpace.OUTPUT, 0, 2)
    for space in sorted(dma_spaces(cfg, Opcode.STORE)):
        depth = mem_depth(cfg, space)
        if space != MemSpace.OUTPUT:     # (OUTPUT: what the ACTIVATEs above left)
            await drv.write_mem(space, 0, _random_words(cfg, space, depth, rng))
        k = words_per_line(cfg, space)
        count = max(k, (depth - 1) // k * k)
        n = _lines_of(cfg, space, count)
        # the lines either side hold data the STORE must leave alone (a line
        # never written reads as whatever the chip powered up with)
        await _fill_device(drv, base - 1, rng.integers(0, 256, LINE, dtype=np.uint8).tobytes())
        await _fill_device(drv, base + n, rng.integers(0, 256, LINE, dtype=np.uint8).tobytes())
        await drv.request(Opcode.STORE, _transfer(Opcode.STORE, space, 1, base * LINE, count))
        got = await _read_device(drv, base - 1, n + 2)   # and the lines either side
        assert len(got) == (n + 2) * LINE
        base += n + 3


async def queued_in_order(drv):
    """Transfers and compute queued at once run in queue order; the front end
    waits for a queued LOAD of the rows it writes."""
    cfg = drv.config
    rng = np.random.default_rng(13)
    R, C = cfg.rows, cfg.cols
    m = min(cfg.input_depth, cfg.acc_depth) // 2
    a = rng.integers(cfg.operand_min, cfg.operand_max + 1, (m, 2 * R))
    w = rng.integers(cfg.operand_min, cfg.operand_max + 1, (2 * R, C))
    dev_a, dev_w0, dev_w1, dev_acc, dev_out = 8192, 8300, 8400, 8500, 8600
    await _fill_device(drv, dev_a, pack_words(cfg, MemSpace.INPUT, a[:, :R]) +
                       pack_words(cfg, MemSpace.INPUT, a[:, R:]))
    await _fill_device(drv, dev_w0, pack_words(cfg, MemSpace.WEIGHT, w[:R]))
    await _fill_device(drv, dev_w1, pack_words(cfg, MemSpace.WEIGHT, w[R:]))
    await _fill_device(drv, dev_acc, pack_words(cfg, MemSpace.ACC, _random_words(
        cfg, MemSpace.ACC, cfg.acc_depth, rng)))
    mult, shift = am.quantize_multiplier(np.full(C, 1.0 / 256))
    await drv.write_mem(MemSpace.ACT_PARAM, 0, np.stack([np.zeros(C, np.int64), mult, shift])[None])
    async def queue(op, **fields):
        # each frame is answered as it enters the queue (frames are sent one
        # at a time, as a UART would deliver them: faster, the link would
        # answer BUSY to frames it has no buffer for)
        await drv.request(op, encode_instruction(op, **fields))
    # a long transfer at the head keeps the rest queued behind it
    await queue(Opcode.LOAD, space=int(MemSpace.ACC), addr=0, dram_addr=dev_acc * LINE,
                count=cfg.acc_depth)
    await queue(Opcode.LOAD, space=int(MemSpace.INPUT), addr=0, dram_addr=dev_a * LINE,
                count=2 * m)
    await queue(Opcode.LOAD, space=int(MemSpace.WEIGHT), addr=0, dram_addr=dev_w0 * LINE, count=R)
    await queue(Opcode.GEMM, a_addr=0, w_addr=0, acc_addr=0, m=m, flags=0)
    # the same WEIGHT rows again: the feeder must not fetch the next GEMM's
    # tile before this LOAD, nor this LOAD overwrite the rows before the
    # first GEMM's tile left them
    await queue(Opcode.LOAD, space=int(MemSpace.WEIGHT), addr=0, dram_addr=dev_w1 * LINE, count=R)
    await queue(Opcode.GEMM, a_addr=m, w_addr=0, acc_addr=0, m=m, flags=1)
    await queue(Opcode.STORE, space=int(MemSpace.ACC), addr=0, dram_addr=dev_acc * LINE, count=m)
    if cfg.has_activation:
        await queue(Opcode.ACTIVATE, acc_addr=0, out_addr=0, m=m, param_entry=0,
                    function=int(ActivationFunction.NONE), flags=activate_flags(1, 0))
        await queue(Opcode.STORE, space=int(MemSpace.OUTPUT), addr=0, dram_addr=dev_out * LINE,
                    count=m)
    # a LOAD queued behind the compute, then a WRITE_MEM of the same rows:
    # the model applies the LOAD first, the device must wait for it
    await queue(Opcode.LOAD, space=int(MemSpace.INPUT), addr=0, dram_addr=dev_a * LINE, count=2)
    waits0 = (await _read_counters(drv, ["HAZARD_WAIT"]))["HAZARD_WAIT"]
    await drv.request(Opcode.WRITE_MEM, encode_instruction(
        Opcode.WRITE_MEM, space=int(MemSpace.INPUT), addr=1,
        data=pack_words(cfg, MemSpace.INPUT, a[:1, R:])))
    waits = (await _read_counters(drv, ["HAZARD_WAIT"]))["HAZARD_WAIT"] - waits0
    drv.dut._log.info("WRITE_MEM behind a queued LOAD of its rows waited %d cycles", waits)
    assert waits > 0, "the WRITE_MEM did not wait for the queued LOAD of its rows"
    await drv.request(Opcode.SYNC)
    acc = drv.model.mem[MemSpace.ACC][:m]
    assert_bit_exact(a @ w, acc, "model ACC = A @ W (the test's own premise)")
    got = await _read_device(drv, dev_acc, _lines_of(cfg, MemSpace.ACC, m))
    assert_bit_exact(pack_words(cfg, MemSpace.ACC, a @ w), got, "DEVICE lines STOREd from ACC")
    if cfg.has_activation:
        await _read_device(drv, dev_out, _lines_of(cfg, MemSpace.OUTPUT, m))
    got = await drv.read_mem(MemSpace.INPUT, 0, 2)
    assert_bit_exact(np.concatenate([a[:1, :R], a[:1, R:]]), got,
                     "INPUT rows: LOADed, then row 1 overwritten by the WRITE_MEM after it")
    await drv.check_memories()


async def statuses(drv):
    """Every LOAD / STORE check answers what the model answers."""
    cfg = drv.config
    lines = cfg.memory.lines
    cases = []
    for op in (Opcode.LOAD, Opcode.STORE):
        ok = sorted(dma_spaces(cfg, op))
        bad = [s for s in MemSpace if s not in ok]
        sp = ok[0]
        wb = mem_word(cfg, sp).bytes
        k = words_per_line(cfg, sp)
        depth = mem_depth(cfg, sp)
        cases += [
            (op, sp, 0, 0, k),                            # OK
            (op, sp, 0, 0, 0),                            # empty
            (op, sp, depth - k + 1, 0, k),                # past the space
            (op, sp, 0, 8, k),                            # off a line
            (op, sp, 0, lines * LINE - k * wb, k),        # the last line: OK
            (op, sp, 0, lines * LINE, k),                 # past the store
            (op, sp, 0, 1 << 31, k),                      # far past the store
            (op, sp, 1 << 20, 0, k),                      # addr high bits
            (op, sp, 0, 0, (1 << 20) + k),                # count high bits
        ]
        if k > 1:
            cases.append((op, sp, 0, 0, k + 1))           # half a line at the end
        cases += [(op, s, 0, 0, 2) for s in bad[:3]]
        cases.append((op, 9, 0, 0, 2))                    # no such space
    for op, sp, addr, dram, count in cases:
        # (the reply's status is compared with the model's, byte for byte)
        await drv.send(drv.frame(op, encode_instruction(op, space=int(sp), addr=addr,
                                                       dram_addr=dram, count=count)))
    await drv.request(Opcode.SYNC)


async def counters(drv):
    """DMA byte counters exact; DMA_BUSY within the refresh / open-row bound."""
    cfg = drv.config
    timing = sdram_timing(cfg.memory, cfg.clock_hz)
    await drv.write_regs({"CONTROL": 1})
    jobs = [(Opcode.LOAD, MemSpace.WEIGHT, 0, 100 * LINE, mem_depth(cfg, MemSpace.WEIGHT)),
            (Opcode.STORE, MemSpace.ACC, 0, 20000 * LINE, mem_depth(cfg, MemSpace.ACC)),
            (Opcode.LOAD, MemSpace.ACC, 0, 20000 * LINE, mem_depth(cfg, MemSpace.ACC)),
            (Opcode.STORE, MemSpace.INPUT, 0, 30000 * LINE, mem_depth(cfg, MemSpace.INPUT))]
    model_busy = 0
    for op, space, addr, dram, count in jobs:
        await drv.request(op, _transfer(op, space, addr, dram, count))
        await drv.request(Opcode.SYNC)
        f = {"space": int(space), "addr": addr, "dram_addr": dram, "count": count}
        first, n = dma_lines(cfg, f)
        model_busy += dma_cycles(cfg, op, f, drv.model.dram.transfer_cycles(
            first, n, op == Opcode.STORE))
    got = await _read_counters(drv, ["DMA_BYTES_IN", "DMA_BYTES_OUT", "DMA_BUSY"])
    want = {k: drv.model.counters[k] for k in got}
    assert got["DMA_BYTES_IN"] == want["DMA_BYTES_IN"], (got, want)
    assert got["DMA_BYTES_OUT"] == want["DMA_BYTES_OUT"], (got, want)
    assert want["DMA_BUSY"] == model_busy
    # The model times a transfer from every bank closed and a refresh just
    # done.  Here a transfer may start with its first row open (one ACTIVE,
    # tRCD, saved) or its bank open to another row (a PRECHARGE, tRP, more),
    # and meet one refresh more (PRECHARGE all, AUTO REFRESH, ACTIVE again:
    # tRP + tRFC + tRCD) or fewer: at most that many cycles either way.
    bound = len(jobs) * (timing.rp + timing.rfc + timing.rcd + timing.rp)
    drv.dut._log.info("DMA_BUSY of %d transfers: RTL %d, model %d (bound +-%d)",
                  len(jobs), got["DMA_BUSY"], want["DMA_BUSY"], bound)
    assert abs(got["DMA_BUSY"] - want["DMA_BUSY"]) <= bound, (
        f"DMA_BUSY RTL {got['DMA_BUSY']}, model {want['DMA_BUSY']}: more than {bound} apart")

"""Bit-exact model of the whole device (:class:`hetaccel.rtl.device.Device`).

:class:`DeviceModel` takes the same request bytes as the RTL's ``rx`` stream
and returns the bytes the RTL sends on ``tx``.  It is built from the other
models, never from copies of their arithmetic:

* framing, resynchronisation and the link's own replies (BAD_CRC, BAD_LENGTH,
  BUSY) come from :class:`hetaccel.sim.link_model.LinkModel`;
* instruction validity from :func:`hetaccel.spec.check_instruction` (the rules
  the RTL decoder implements) and the payload layouts from
  :data:`hetaccel.spec.INSTRUCTIONS`;
* GEMM from :mod:`hetaccel.sim.systolic_model` (``gemm_reference``, ``wrap``),
  ACTIVATE from :class:`hetaccel.sim.activation_model.ActivationUnitModel`,
  ADAM from :func:`hetaccel.sim.adam_model.adam_step`;
* the device memory (DEVICE, LOAD, STORE) from
  :class:`hetaccel.sim.device_memory_model.DeviceMemoryModel`, whose SDRAM is
  :class:`hetaccel.sim.sdram_model.SdramModel`.

Timing.  The model executes every delivered frame at once, before the next
byte, i.e. it describes a host that waits for each reply before sending the
next frame (then the RTL never answers BUSY).  Compute instructions retire in
order in the RTL, so executing them immediately gives the same memory
contents.  Each compute instruction adds its
:func:`~hetaccel.spec.timing.busy_cycles` and
:func:`~hetaccel.spec.timing.stall_cycles` to its unit's busy and stall
counters, which then equal the RTL's for an instruction that finds the queue
empty and the engine idle (what runs before it can change them; see
:func:`~hetaccel.spec.timing.instruction_cycles`), and its
:func:`~hetaccel.spec.timing.instruction_cycles` to ``CYCLES`` and
:attr:`DeviceModel.compute_cycles`: the cycles the device works on it, where
the RTL's ``CYCLES`` counts every clock cycle, the link's included.
``QUEUE_FULL`` and ``HAZARD_WAIT`` stay 0 (no frame waits in the model);
``BYTES_IN``, ``BYTES_OUT`` and ``FRAMES`` are exact (see docs/isa.md).

Speed.  Whole, well-formed frames at a frame boundary take a vectorised path
(the CRC through :func:`binascii.crc_hqx`, which computes the same
CRC-16/CCITT-FALSE as :func:`hetaccel.spec.link.crc16` -- a test checks
it); everything else goes byte by byte through the LinkModel.  The host
runtime's "emu" backend is this class.
"""

from __future__ import annotations

import binascii
from functools import lru_cache

import numpy as np

from ..spec import (ACT_PRECISION_MASK, ACT_TABLE_SHIFT, ACTIVATION_FORMAT, ADAM_HYPERPARAMETERS,
                    COUNTERS, GEMM_ACCUMULATE, AcceleratorConfig, MemSpace, Opcode,
                    MEMORY_COUNTERS, Status, identity_words, mem_depth, mem_present, mem_word, register_map,
                    validate_instruction)
from ..spec.link import LINK
from ..spec.timing import busy_cycles, dma_cycles, dma_lines, instruction_cycles, stall_cycles
from . import systolic_model
from .activation_model import ActivationUnitModel
from .adam_model import adam_step
from .device_memory_model import DeviceMemoryModel
from .link_model import LinkModel, LinkReply

__all__ = ["DeviceModel", "fast_reply"]


def fast_reply(status: int, seq: int, payload: bytes = b"") -> bytes:
    """The reply frame :func:`hetaccel.spec.link.encode_reply` builds, with
    the CRC computed in C (same polynomial, init and bit order)."""
    body = bytes((len(payload) & 0xFF, len(payload) >> 8, seq & 0xFF, int(status))) + payload
    crc = binascii.crc_hqx(body, LINK.crc_init)
    return bytes((LINK.sync_reply,)) + body + bytes((crc & 0xFF, crc >> 8))


@lru_cache(maxsize=64)
def _regs_by_addr(config: AcceleratorConfig) -> dict:
    return {r.addr: r for r in register_map(config).values()}


def _wrap(values: np.ndarray, bits: int) -> np.ndarray:
    if bits == 32:      # the common case, by a native cast (same two's-complement wrap)
        return np.asarray(values).astype(np.int32).astype(np.int64)
    return systolic_model.wrap(values, bits)


class DeviceModel:
    """Whole-device model: ``feed(request_bytes) -> reply_bytes``.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    mem : dict[MemSpace, numpy.ndarray]
        Scratchpads the device can read back, shape ``(depth, *word.shape)``:
        INPUT/WEIGHT int, ACC int64, OUTPUT int16, OPT uint32 bit patterns.
    act : ActivationUnitModel or None
        Holds TABLE and ACT_PARAM (write-only on the device).
    dram : DeviceMemoryModel or None
        The device memory (DEVICE, LOAD, STORE), when the config has one.
    regs : dict[str, int]
        Read/write registers (the ``ADAM_*`` hyperparameters).
    counters : dict[str, int]
        Performance counters by name (see :data:`hetaccel.spec.COUNTERS`).
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        self.config = config
        self.link = LinkModel(config)
        self.mem: dict[MemSpace, np.ndarray] = {}
        opd = np.int8 if config.operand_bits <= 8 else np.int16
        for space in (MemSpace.INPUT, MemSpace.WEIGHT, MemSpace.ACC, MemSpace.OUTPUT, MemSpace.OPT):
            if not mem_present(config, space):
                continue
            word = mem_word(config, space)
            dtype = {MemSpace.INPUT: opd, MemSpace.WEIGHT: opd, MemSpace.ACC: np.int64,
                     MemSpace.OUTPUT: np.int16, MemSpace.OPT: np.uint32}[space]
            self.mem[space] = np.zeros((mem_depth(config, space),) + word.shape, dtype=dtype)
        self.act = None
        if config.has_activation:
            self.act = ActivationUnitModel(config)
        self.dram = DeviceMemoryModel(config) if config.memory is not None else None
        self.registers = register_map(config)
        self.regs = {r.name: 0 for r in self.registers.values() if r.access == "rw"}
        self.identity = identity_words(config)
        self._words = {s: mem_word(config, s) for s in MemSpace if mem_present(config, s)}
        self.counters = {name: 0 for name, _ in COUNTERS}
        if self.dram is not None:
            self.counters.update({name: 0 for name, _ in MEMORY_COUNTERS})
        self.compute_cycles = 0
        self._rx_bytes = 0

    def reset(self) -> None:
        """The device's ``rst``: link, registers, counters and queue return to
        their reset state; scratchpad contents (block RAM) are kept."""
        self.link = LinkModel(self.config)
        self.regs = {k: 0 for k in self.regs}
        self.counters = {k: 0 for k in self.counters}

    # ------------------------------------------------------------------ bytes

    def feed(self, data) -> bytes:
        """Feed request bytes (no idle gaps); return every reply byte they cause."""
        data = bytes(data)
        view = memoryview(data)
        out = bytearray()
        n, i = len(data), 0
        sync, maxp = LINK.sync_request, self.config.max_payload
        while i < n:
            if not self.link.in_frame:
                j = data.find(sync, i)
                if j < 0:                      # garbage between frames: ignored
                    self._count_rx(n - i)
                    break
                self._count_rx(j - i)
                i = j
                if i + 5 <= n:
                    length = data[i + 1] | data[i + 2] << 8
                    end = i + 5 + length + 2
                    if length <= maxp and end <= n:
                        self._count_rx(end - i)
                        body = view[i + 1:end - 2]
                        crc = data[end - 2] | data[end - 1] << 8
                        seq, code = data[i + 3], data[i + 4]
                        if binascii.crc_hqx(body, LINK.crc_init) != crc:
                            self.link.rejected += 1
                            out += LinkReply(Status.BAD_CRC, seq).encode()
                        else:
                            self.link.delivered += 1
                            out += self._execute(code, seq, body[4:].tobytes())
                        i = end
                        continue
            # Slow path: one byte through the link model.
            self._count_rx(1)
            for ev in self.link.feed(data[i:i + 1]):
                if isinstance(ev, LinkReply):
                    out += ev.encode()
                else:
                    self.link.release()
                    out += self._execute(ev.opcode, ev.seq, ev.payload)
            i += 1
        return bytes(out)

    def idle(self, cycles: int) -> None:
        """``cycles`` cycles with no byte on rx (may abandon a partial frame)."""
        self.link.idle(cycles)

    def _count_rx(self, nbytes: int) -> None:
        self.counters["BYTES_IN"] = (self.counters["BYTES_IN"] + nbytes) & 0xFFFFFFFF

    def request(self, opcode: int, payload: bytes = b"", seq: int = 0) -> tuple[int, bytes]:
        """Execute one instruction directly (no framing); ``(status, reply payload)``."""
        reply = self._execute(int(opcode), seq, bytes(payload))
        return reply[4], reply[5:-2]

    # -------------------------------------------------------------- execution

    def _execute(self, opcode: int, seq: int, payload: bytes) -> bytes:
        status, fields = validate_instruction(self.config, opcode, payload)
        reply_payload = b""
        if status == Status.OK:
            reply_payload = self._run(Opcode(opcode), fields)
        reply = fast_reply(status, seq, reply_payload)
        c = self.counters
        c["FRAMES"] = (c["FRAMES"] + 1) & 0xFFFFFFFF
        c["BYTES_OUT"] = (c["BYTES_OUT"] + len(reply)) & 0xFFFFFFFF
        return reply

    def _run(self, op: Opcode, f: dict) -> bytes:
        if op == Opcode.NOP:
            return b"".join(self.identity[k].to_bytes(4, "little") for k in ("ID", "VERSION"))
        if op == Opcode.SYNC:
            return b""
        if op == Opcode.WRITE_MEM:
            self.write_words(f["space"], f["addr"], f["data"])
            return b""
        if op == Opcode.READ_MEM:
            return self.read_words(f["space"], f["addr"], f["count"])
        if op == Opcode.WRITE_REG:
            for rec in f["records"]:
                self._write_reg(rec["reg"], rec["value"])
            return b""
        if op == Opcode.READ_REG:
            return b"".join(self.read_reg(rec["reg"]).to_bytes(4, "little")
                            for rec in f["records"])
        if op in (Opcode.LOAD, Opcode.STORE):
            return self._dma(op, f)
        cycles = instruction_cycles(self.config, op, f)
        self.compute_cycles += cycles
        unit = {Opcode.GEMM: "GEMM", Opcode.ACTIVATE: "ACT", Opcode.ADAM: "ADAM"}[op]
        if op == Opcode.GEMM:
            self._gemm(f)
        elif op == Opcode.ACTIVATE:
            self._activate(f)
        else:
            self._adam(f)
        self._add(f"{unit}_BUSY", busy_cycles(self.config, op, f))
        self._add(f"{unit}_STALL", stall_cycles(self.config, op, f))
        self._add("CYCLES", cycles)
        return b""

    def _dma(self, op: Opcode, f: dict) -> bytes:
        space, n = f["space"], f["count"]
        nbytes = n * self._words[MemSpace(space)].bytes
        if op == Opcode.LOAD:
            self.write_words(space, f["addr"], self.dram.read(f["dram_addr"], nbytes))
            self._add("DMA_BYTES_IN", nbytes)
        else:
            self.dram.write(f["dram_addr"], self.read_words(space, f["addr"], n))
            self._add("DMA_BYTES_OUT", nbytes)
        first, lines = dma_lines(self.config, f)
        cycles = dma_cycles(self.config, op, f,
                            self.dram.transfer_cycles(first, lines, op == Opcode.STORE))
        self.compute_cycles += cycles
        self._add("DMA_BUSY", cycles)
        self._add("CYCLES", cycles)
        return b""

    def _add(self, name: str, value: int) -> None:
        self.counters[name] = (self.counters[name] + value) & 0xFFFFFFFF

    # ------------------------------------------------------------ registers

    def read_reg(self, addr: int) -> int:
        r = _regs_by_addr(self.config)[addr]
        if r.name in self.identity:
            return self.identity[r.name]
        if r.name in self.counters:
            return self.counters[r.name]
        return self.regs.get(r.name, 0)

    def _write_reg(self, addr: int, value: int) -> None:
        r = _regs_by_addr(self.config)[addr]
        if r.name == "CONTROL":
            if value & 1:
                for k in self.counters:
                    self.counters[k] = 0
            return
        self.regs[r.name] = value & ((1 << r.bits) - 1)

    def adam_hyperparameters(self) -> dict:
        """The ADAM_* registers as the dict :func:`adam_model.adam_step` takes."""
        hp = {n: self.regs[f"ADAM_{n.upper()}"] for n in ADAM_HYPERPARAMETERS}
        hp["mode"] = self.regs["ADAM_MODE"]
        return hp

    # --------------------------------------------------------------- memory

    def write_words(self, space: int, addr: int, data: bytes) -> None:
        """WRITE_MEM semantics (no checks: :func:`check_instruction` passed)."""
        space = MemSpace(space)
        word = self._words[space]
        if space == MemSpace.DEVICE:
            self.dram.write(addr * word.bytes, data)
            return
        raw = np.frombuffer(data, dtype="<u4" if word.kind == "float" else word.dtype)
        raw = raw.reshape((-1,) + word.shape)
        n = raw.shape[0]
        if space == MemSpace.TABLE:
            self.act.tables.reshape(-1)[addr:addr + n] = raw.reshape(-1)
            return
        if space == MemSpace.ACT_PARAM:
            fmt = ACTIVATION_FORMAT
            v = raw.astype(np.int64)
            sl = slice(addr, addr + n)
            self.act.bias[sl] = _wrap(v[:, 0], fmt.bias_bits)
            self.act.multiplier[sl] = v[:, 1] & ((1 << fmt.multiplier_bits) - 1)
            self.act.shift[sl] = v[:, 2] & ((1 << fmt.shift_bits) - 1)
            return
        mem = self.mem[space]
        if word.kind == "int" and word.width < 8 * word.element_bytes:
            raw = _wrap(raw.astype(np.int64), word.width)
        mem[addr:addr + n] = raw

    def read_words(self, space: int, addr: int, count: int) -> bytes:
        """READ_MEM reply payload."""
        space = MemSpace(space)
        word = self._words[space]
        if space == MemSpace.DEVICE:
            return self.dram.read(addr * word.bytes, count * word.bytes)
        rows = self.mem[space][addr:addr + count]
        if word.kind == "float":
            return rows.astype("<u4").tobytes()
        return rows.astype(word.dtype).tobytes()

    # -------------------------------------------------------------- compute

    def _gemm(self, f: dict) -> None:
        cfg = self.config
        m = f["m"]
        a = self.mem[MemSpace.INPUT][f["a_addr"]:f["a_addr"] + m]
        w = self.mem[MemSpace.WEIGHT][f["w_addr"]:f["w_addr"] + cfg.rows]
        acc = self.mem[MemSpace.ACC]
        rows = slice(f["acc_addr"], f["acc_addr"] + m)
        prod = self._tile_product(a, w)
        if f["flags"] & GEMM_ACCUMULATE:
            prod = prod + acc[rows]
        acc[rows] = _wrap(prod, cfg.acc_bits)

    def _tile_product(self, a: np.ndarray, w: np.ndarray) -> np.ndarray:
        # Float BLAS is exact while every partial sum is an integer below the
        # mantissa limit (rows * 2**(2*operand_bits-2) bounds |sum|): float32
        # below 2**24, float64 below 2**53; otherwise the int64 reference.
        # tests/test_device.py checks this against gemm_reference.
        bound = self.config.rows * (1 << (2 * self.config.operand_bits - 2))
        if bound < (1 << 24):
            return (a.astype(np.float32) @ w.astype(np.float32)).astype(np.int64)
        if bound < (1 << 53):
            return (a.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
        return systolic_model.gemm_reference(a, w)

    def _activate(self, f: dict) -> None:
        m = f["m"]
        acc = self.mem[MemSpace.ACC][f["acc_addr"]:f["acc_addr"] + m]
        out = self.act.process(acc, f["function"], f["flags"] & ACT_PRECISION_MASK,
                               f["param_entry"], table=f["flags"] >> ACT_TABLE_SHIFT)
        self.mem[MemSpace.OUTPUT][f["out_addr"]:f["out_addr"] + m] = out

    def _adam(self, f: dict) -> None:
        words = self.mem[MemSpace.OPT][f["addr"]:f["addr"] + f["count"]]
        fl = words.view(np.float32)
        p, g, m, v = (np.ascontiguousarray(fl[..., i]) for i in range(4))
        p2, m2, v2 = adam_step(p, g, m, v, self.adam_hyperparameters())
        words[..., 0] = p2.view(np.uint32)
        words[..., 2] = m2.view(np.uint32)
        words[..., 3] = v2.view(np.uint32)

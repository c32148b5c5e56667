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

Bulk path.  The runtime's emulator may also hand the model whole groups of
frames without their bytes: :meth:`DeviceModel.bulk_request` (one frame),
:meth:`~DeviceModel.bulk_write` / :meth:`~DeviceModel.bulk_read` (a load or a
read-back cut into frames), :meth:`~DeviceModel.bulk_gemm` (a grid of GEMMs
over consecutive tiles, as one matrix product) and
:meth:`~DeviceModel.bulk_activate` (ACTIVATEs of consecutive row blocks).
Each has exactly the effect of feeding its frames, in order, to an idle
link -- memories, every counter, :attr:`~DeviceModel.compute_cycles`, the
link's delivered count -- and its ``*_ok`` twin says, without changing
anything, whether the device would accept every one of them (a frame it
would refuse must go through :meth:`feed`, which answers it).
tests/test_emulator_fast.py holds each against the frames it stands for.
"""

from __future__ import annotations

import binascii
import struct
from functools import lru_cache

import numpy as np

from ..spec import (ACT_PRECISION_MASK, ACT_TABLE_SHIFT, ACTIVATION_FORMAT, ADAM_HYPERPARAMETERS,
                    COUNTERS, GEMM_ACCUMULATE, INSTRUCTIONS, MEMORY_COUNTERS, AcceleratorConfig,
                    MemSpace, Opcode, Status, identity_words, mem_depth, mem_present, mem_word,
                    register_map, validate_instruction)
from ..spec.link import LINK, frame_bytes
from ..spec.timing import busy_cycles, dma_cycles, dma_lines, instruction_cycles, stall_cycles
from . import systolic_model
from .activation_model import ActivationUnitModel
from .adam_model import adam_step
from .device_memory_model import DeviceMemoryModel
from .link_model import LinkModel, LinkReply

__all__ = ["DeviceModel", "fast_reply", "exact_product"]

_U32 = 0xFFFFFFFF
_FIXED = {op: fmt.fixed_bytes for op, fmt in INSTRUCTIONS.items()}
_UNIT = {Opcode.GEMM: "GEMM", Opcode.ACTIVATE: "ACT", Opcode.ADAM: "ADAM"}


def fast_reply(status: int, seq: int, payload: bytes = b"") -> bytes:
    """The reply frame :func:`hetaccel.spec.link.encode_reply` builds, with
    the CRC computed in C (same polynomial, init and bit order)."""
    body = bytes((len(payload) & 0xFF, len(payload) >> 8, seq & 0xFF, int(status))) + payload
    crc = binascii.crc_hqx(body, LINK.crc_init)
    return bytes((LINK.sync_reply,)) + body + bytes((crc & 0xFF, crc >> 8))


@lru_cache(maxsize=64)
def _regs_by_addr(config: AcceleratorConfig) -> dict:
    return {r.addr: r for r in register_map(config).values()}


def _unit_cycles(config: AcceleratorConfig, op: Opcode, size: int) -> tuple[int, int, int]:
    """``(cycles, busy, stall)`` of one compute instruction of ``size`` rows
    (``m``; ``count`` for ADAM): the only field its timing depends on."""
    f = {"count": size} if op == Opcode.ADAM else {"m": size}
    return (instruction_cycles(config, op, f), busy_cycles(config, op, f),
            stall_cycles(config, op, f))


@lru_cache(maxsize=None)
def _packer(op: Opcode) -> struct.Struct:
    return struct.Struct("<" + "".join({1: "B", 2: "H", 4: "I"}[n]
                                       for _, n in INSTRUCTIONS[op].fields))


def _payload(op: Opcode, *fields) -> bytes | None:
    """The fixed-layout payload of ``op``; None when a field does not fit its width."""
    try:
        return _packer(op).pack(*fields)
    except struct.error:
        return None


def exact_product(a: np.ndarray, b: np.ndarray, bound: int) -> np.ndarray:
    """``a @ b`` of integer matrices exactly, at BLAS speed: int32 when one
    float32 product holds it (every sum below 2**24), else int64.

    ``a`` and ``b`` hold integers (in an integer or float dtype: a caller that
    multiplies many slices of one matrix converts it once); ``bound`` bounds
    ``|a[i, k] * b[k, j]|``.  Float arithmetic is exact while
    every partial sum is an integer below its mantissa limit: float32 below
    2**24, float64 below 2**53.  Reductions too long for float32 are cut into
    slices that each stay below 2**24 (float32 BLAS is twice as fast as
    float64) and summed in float64; beyond 2**53 the int64 product.
    """
    k = a.shape[1]
    if k == 0 or bound == 0:
        return np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)
    if k * bound >= 1 << 53:
        return a.astype(np.int64, copy=False) @ b.astype(np.int64, copy=False)
    step = ((1 << 24) - 1) // bound
    if step >= k:
        return (a.astype(np.float32, copy=False) @ b.astype(np.float32, copy=False)
                ).astype(np.int32)
    if step < 64:       # slices too thin to be worth it
        return (a.astype(np.float64, copy=False) @ b.astype(np.float64, copy=False)
                ).astype(np.int64)
    a32, b32 = a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.float64)
    for k0 in range(0, k, step):
        out += a32[:, k0:k0 + step] @ b32[k0:k0 + step]
    return out.astype(np.int64)


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
        self._regs_by_addr = _regs_by_addr(config)
        self._words = {s: mem_word(config, s) for s in MemSpace if mem_present(config, s)}
        self.counters = {name: 0 for name, _ in COUNTERS}
        if self.dram is not None:
            self.counters.update({name: 0 for name, _ in MEMORY_COUNTERS})
        self.compute_cycles = 0
        self._rx_bytes = 0
        #: ``[frames, request bytes, reply bytes]`` that went through the bulk
        #: path (not wrapped at 32 bits): what the host sent and received
        self.bulk_traffic = [0, 0, 0]
        # the bulk checks depend on their arguments and the config alone
        self._ok: dict = {}
        self._timing: dict = {}
        self._decoded: dict = {}
        self._load_tally: dict = {}
        self._dma_tally: dict = {}

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

    # -------------------------------------------------------------- bulk path

    @property
    def link_idle(self) -> bool:
        """No partial frame in the parser and no delivered frame unreleased:
        the state in which the bulk methods stand for fed frames."""
        return not self.link.in_frame and not self.link.pending

    def _tally(self, frames: int, bytes_in: int, bytes_out: int) -> None:
        """The link and counter effect of ``frames`` delivered frames."""
        self.link.delivered += frames
        c = self.counters
        c["FRAMES"] = (c["FRAMES"] + frames) & _U32
        c["BYTES_IN"] = (c["BYTES_IN"] + bytes_in) & _U32
        c["BYTES_OUT"] = (c["BYTES_OUT"] + bytes_out) & _U32
        t = self.bulk_traffic
        t[0] += frames
        t[1] += bytes_in
        t[2] += bytes_out

    def _compute_tally(self, op: Opcode, size: int, n: int) -> None:
        """``n`` compute instructions of ``size`` rows, each acknowledged."""
        key = (op, size)
        t = self._timing.get(key)
        if t is None:
            t = self._timing[key] = _unit_cycles(self.config, op, size)
        cycles, busy, stall = t
        self.compute_cycles += n * cycles
        c = self.counters
        unit = _UNIT[op]
        c[unit + "_BUSY"] = (c[unit + "_BUSY"] + n * busy) & _U32
        c[unit + "_STALL"] = (c[unit + "_STALL"] + n * stall) & _U32
        c["CYCLES"] = (c["CYCLES"] + n * cycles) & _U32
        self._tally(n, n * frame_bytes(_FIXED[op]), n * frame_bytes(0))

    def _frame_ok(self, opcode: int, payload: bytes | None) -> bool:
        return (payload is not None and len(payload) <= self.config.max_payload
                and validate_instruction(self.config, opcode, payload)[0] == Status.OK)

    def request_ok(self, opcode: int, payload: bytes) -> bool:
        """Whether the device answers this frame OK."""
        payload = bytes(payload)
        if len(payload) > 64:
            return self._frame_ok(opcode, payload)
        ok = self._ok.get((opcode, payload))
        if ok is not None:
            return ok
        return self._cached((opcode, payload), lambda: self._frame_ok(opcode, payload))

    def bulk_request(self, opcode: int, payload: bytes = b"") -> bytes:
        """One frame the device answers OK (:meth:`request_ok`); its reply payload."""
        payload = bytes(payload)
        key = (opcode, payload)
        checked = self._decoded.get(key) if len(payload) <= 64 else None
        if checked is None:
            checked = validate_instruction(self.config, opcode, payload)
            if len(payload) <= 64 and opcode not in (Opcode.WRITE_REG, Opcode.WRITE_MEM):
                # the fields of what it reads are only read, never changed
                if len(self._decoded) > 4096:
                    self._decoded.clear()
                self._decoded[key] = checked
        status, fields = checked
        if status != Status.OK or len(payload) > self.config.max_payload:
            raise ValueError(f"the device refuses this {Opcode(opcode).name} frame "
                             f"({status.name}); send it with feed()")
        # BYTES_IN counts a frame as it arrives, FRAMES and BYTES_OUT as it is answered
        # (a READ_REG of them sees exactly that)
        self._count_rx(frame_bytes(len(payload)))
        self.link.delivered += 1
        reply = self._run(opcode if type(opcode) is Opcode else Opcode(opcode), fields)
        c = self.counters
        c["FRAMES"] = (c["FRAMES"] + 1) & _U32
        c["BYTES_OUT"] = (c["BYTES_OUT"] + frame_bytes(len(reply))) & _U32
        t = self.bulk_traffic
        t[0] += 1
        t[1] += frame_bytes(len(payload))
        t[2] += frame_bytes(len(reply))
        return reply

    def _chunk_frames(self, op: Opcode, space: int, addr: int, chunks) -> list | None:
        """The first, the longest and the last of the frames moving ``chunks``
        words each from ``addr`` on: if these pass, every one does (the ranges
        are contiguous, the lengths at most the longest)."""
        chunks = [int(c) for c in chunks]
        if not chunks or min(chunks) < 1 or addr < 0 or space not in self._words:
            return None
        wb = self._words[MemSpace(space)].bytes
        last = addr + sum(chunks) - chunks[-1]

        def frame(a: int, n: int) -> bytes | None:
            if op == Opcode.READ_MEM:
                return _payload(op, space, a, n)
            head = _payload(op, space, a)
            return None if head is None else head + bytes(n * wb)

        return [frame(addr, chunks[0]), frame(addr, max(chunks)), frame(last, chunks[-1])]

    def _cached(self, key: tuple, check) -> bool:
        ok = self._ok.get(key)
        if ok is None:
            if len(self._ok) > 1 << 16:
                self._ok.clear()
            ok = self._ok[key] = bool(check())
        return ok

    def bulk_load_count(self, payloads: tuple) -> None:
        """LOAD frames (``payloads``) the device answers OK, counted -- every
        counter, the cycles, the link -- but not executed: their words the
        caller moves with :meth:`load_words`, only those no later LOAD
        rewrites."""
        t = self._dma_tally.get(payloads)
        if t is None:
            cycles = nbytes = b_in = 0
            for p in payloads:
                status, f = validate_instruction(self.config, Opcode.LOAD, p)
                if status != Status.OK or len(p) > self.config.max_payload:
                    raise ValueError(f"the device refuses this LOAD frame ({status.name}); "
                                     f"send it with feed()")
                cycles += self._dma_cycles(Opcode.LOAD, f)
                nbytes += f["count"] * self._words[MemSpace(f["space"])].bytes
                b_in += frame_bytes(len(p))
            if len(self._dma_tally) > 4096:
                self._dma_tally.clear()
            t = self._dma_tally[payloads] = (cycles, nbytes, b_in)
        cycles, nbytes, b_in = t
        n = len(payloads)
        self.compute_cycles += cycles
        self._add("DMA_BUSY", cycles)
        self._add("CYCLES", cycles)
        self._add("DMA_BYTES_IN", nbytes)
        self._tally(n, b_in, n * frame_bytes(0))

    def _chunks_ok(self, op: Opcode, space: int, addr: int, chunks) -> bool:
        chunks = tuple(chunks)

        def check():
            frames = self._chunk_frames(op, space, addr, chunks)
            return frames is not None and all(self._frame_ok(op, p) for p in frames)

        return self._cached((op, space, addr, chunks), check)

    def write_ok(self, space: int, addr: int, chunks) -> bool:
        """Whether WRITE_MEM frames of ``chunks`` words each, loading ``space``
        from word ``addr`` on, are all answered OK."""
        return self._chunks_ok(Opcode.WRITE_MEM, space, addr, chunks)

    def bulk_write(self, space: int, addr: int, data, chunks, times: int = 1) -> None:
        """WRITE_MEM frames of ``chunks`` words each loading ``data`` (bytes, or
        an array of the space's word elements) into ``space`` from ``addr`` on,
        sent ``times`` times over; ``data=None``: see :meth:`write_array`."""
        if not self.write_ok(space, addr, chunks):
            raise ValueError(f"the device refuses a WRITE_MEM of {MemSpace(space).name} "
                             f"words {addr}.. in chunks {list(chunks)}; send it with feed()")
        key = (space, tuple(chunks))
        t = self._load_tally.get(key)
        if t is None:
            n = sum(chunks)
            k = len(chunks)
            t = self._load_tally[key] = (n, k, k * frame_bytes(_FIXED[Opcode.WRITE_MEM])
                                         + n * self._words[MemSpace(space)].bytes,
                                         k * frame_bytes(0))
        n, k, b_in, b_out = t
        if data is not None:
            self.write_array(space, addr, data, n)
        self._tally(k * times, b_in * times, b_out * times)

    def write_array(self, space: int, addr: int, data, words: int) -> None:
        """WRITE_MEM's effect on memory (no frame, no counter): ``words`` words
        from bytes or from an array of the space's word elements.

        :meth:`bulk_write` with ``data=None`` counts the frames only; its caller
        then stores their words with this before anything reads them.
        """
        space = MemSpace(space)
        word = self._words[space]
        if not isinstance(data, np.ndarray):
            if len(data) != words * word.bytes:
                raise ValueError(f"{words} words of {word.bytes} bytes need "
                                 f"{words * word.bytes} bytes, got {len(data)}")
            self.write_words(space, addr, data)
            return
        mem = self.mem.get(space)
        if (mem is None or word.kind != "int" or word.width != 8 * word.element_bytes
                or data.dtype != np.dtype(word.dtype)):
            # everything but plain integer words goes through the byte path
            self.write_array(space, addr, np.ascontiguousarray(data).tobytes(), words)
            return
        if data.size != words * word.elements:
            raise ValueError(f"{words} words of {word.elements} elements need "
                             f"{words * word.elements} elements, got {data.size}")
        mem[addr:addr + words] = data.reshape((words,) + word.shape)

    def read_ok(self, space: int, addr: int, chunks) -> bool:
        """Whether READ_MEM frames of ``chunks`` words each, reading ``space``
        from word ``addr`` on, are all answered OK."""
        return self._chunks_ok(Opcode.READ_MEM, space, addr, chunks)

    def bulk_read(self, space: int, addr: int, chunks) -> bytes:
        """READ_MEM frames of ``chunks`` words each from ``addr`` on: their reply
        payloads, joined."""
        if not self.read_ok(space, addr, chunks):
            raise ValueError(f"the device refuses a READ_MEM of {MemSpace(space).name} "
                             f"words {addr}.. in chunks {list(chunks)}; send it with feed()")
        wb = self._words[MemSpace(space)].bytes
        n = sum(chunks)
        data = self.read_words(space, addr, n)
        k = len(chunks)
        self._tally(k, k * frame_bytes(_FIXED[Opcode.READ_MEM]), k * frame_bytes(0) + n * wb)
        return data

    def gemm_ok(self, a_addr: int, w_addr: int, acc_addr: int, m: int, kt: int, nt: int,
                accumulate: bool) -> bool:
        """Whether every GEMM of the grid (see :meth:`bulk_gemm`) is answered OK:
        its first and last instruction reach the lowest and highest rows."""
        def check():
            if kt < 1 or nt < 1:
                return False
            R = self.config.rows
            last = (a_addr + (kt - 1) * m, w_addr + ((kt - 1) * nt + nt - 1) * R,
                    acc_addr + (nt - 1) * m, m, GEMM_ACCUMULATE)
            first = (a_addr, w_addr, acc_addr, m, GEMM_ACCUMULATE if accumulate else 0)
            return all(self._frame_ok(Opcode.GEMM, _payload(Opcode.GEMM, *f))
                       for f in (first, last))

        return self._cached((Opcode.GEMM, a_addr, w_addr, acc_addr, m, kt, nt, accumulate),
                            check)

    def bulk_gemm(self, a_addr: int, w_addr: int, acc_addr: int, m: int, kt: int, nt: int,
                  accumulate: bool, product: np.ndarray | None = None) -> None:
        """``kt * nt`` GEMM instructions, for ``t < kt``, ``j < nt`` in that order::

            GEMM(a_addr + t*m, w_addr + (t*nt + j)*rows, acc_addr + j*m, m,
                 ACCUMULATE if t > 0 or accumulate else 0)

        i.e. ACC block ``j`` (+)= the ``m`` INPUT rows of K-tile ``t`` times
        WEIGHT tile ``(t, j)``, summed over ``t``: one product of an
        ``m x kt*rows`` by a ``kt*rows x nt*cols`` matrix.  The wrap to
        ``acc_bits`` after every addition is a wrap of the sum (two's
        complement addition is modular), and the ``nt`` blocks are distinct
        rows, so this equals the instructions one by one.

        ``product`` (int, ``m x nt*cols``): that product, when the caller
        computed it from the very words it loaded into INPUT and WEIGHT; else
        it is read from them.
        """
        if not self.gemm_ok(a_addr, w_addr, acc_addr, m, kt, nt, accumulate):
            raise ValueError("the device refuses a GEMM of this grid; send it with feed()")
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        if product is None:
            a = self.mem[MemSpace.INPUT][a_addr:a_addr + kt * m]
            a = a.reshape(kt, m, R).transpose(1, 0, 2).reshape(m, kt * R)
            w = self.mem[MemSpace.WEIGHT][w_addr:w_addr + kt * nt * R]
            w = w.reshape(kt, nt, R, C).transpose(0, 2, 1, 3).reshape(kt * R, nt * C)
            product = exact_product(a, w, 1 << (2 * cfg.operand_bits - 2))
        self.bulk_gemm_sum(acc_addr, m, nt, kt * nt, product, accumulate)

    def bulk_gemm_sum(self, acc_addr: int, m: int, nt: int, count: int, product: np.ndarray,
                      accumulate: bool) -> None:
        """The effect of ``count`` GEMMs of ``m`` rows, every one of which the
        caller checked (:meth:`gemm_ok` of their grids), that together add
        ``product`` (int, ``m x nt*cols``) to the ``nt`` blocks of ``m`` ACC rows
        from ``acc_addr`` on, the first overwriting them unless ``accumulate``:
        several :meth:`bulk_gemm` grids on the same rows, one after another,
        whose products add (see there)."""
        self.gemm_sum_words(acc_addr, m, nt, product, accumulate)
        self._compute_tally(Opcode.GEMM, m, count)

    def acc_values(self, values: np.ndarray) -> np.ndarray:
        """Integers as an ACC word holds them (wrapped to ``acc_bits``)."""
        return _wrap(values, self.config.acc_bits)

    def gemm_sum_words(self, acc_addr: int, m: int, nt: int, product: np.ndarray,
                       accumulate: bool) -> None:
        """:meth:`bulk_gemm_sum`'s effect on ACC alone (no counter, no frame)."""
        cfg = self.config
        C = cfg.cols
        if product.shape != (m, nt * C):
            raise ValueError(f"product must have shape {(m, nt * C)}, got {product.shape}")
        rows = self.mem[MemSpace.ACC][acc_addr:acc_addr + nt * m]
        p = product.reshape(m, nt, C).transpose(1, 0, 2).reshape(nt * m, C)
        if accumulate:
            p = p + rows
        rows[...] = _wrap(p, cfg.acc_bits)

    def activate_ok(self, acc_addr: int, out_addr: int, m: int, param_entry: int, n: int,
                    function: int, flags: int) -> bool:
        """Whether every ACTIVATE of :meth:`bulk_activate` is answered OK."""
        def check():
            return n >= 1 and all(self._frame_ok(Opcode.ACTIVATE, _payload(
                Opcode.ACTIVATE, acc_addr + j * m, out_addr + j * m, m, param_entry + j,
                function, flags)) for j in (0, n - 1))

        return self._cached((Opcode.ACTIVATE, acc_addr, out_addr, m, param_entry, n, function,
                             flags), check)

    def bulk_activate(self, acc_addr: int, out_addr: int, m: int, param_entry: int, n: int,
                      function: int, flags: int, values: np.ndarray | None = None) -> None:
        """``n`` ACTIVATE instructions, for ``j < n``::

            ACTIVATE(acc_addr + j*m, out_addr + j*m, m, param_entry + j, function, flags)

        Each reads ACC and writes its own OUTPUT rows, so they run as one
        vectorised pass with the parameters of each block.  ``values``: the
        ``n*m`` OUTPUT words they make, which the caller computed from these
        ACC rows with :meth:`activate_values` (one parameter entry, ``n = 1``)."""
        if not self.activate_ok(acc_addr, out_addr, m, param_entry, n, function, flags):
            raise ValueError("the device refuses an ACTIVATE of this grid; send it with feed()")
        if values is None:
            self.activate_words(acc_addr, out_addr, m, param_entry, n, function, flags)
        else:
            self.write_array(MemSpace.OUTPUT, out_addr, values, n * m)
        self._compute_tally(Opcode.ACTIVATE, m, n)

    def activate_words(self, acc_addr: int, out_addr: int, m: int, param_entry: int, n: int,
                       function: int, flags: int) -> None:
        """:meth:`bulk_activate`'s effect on OUTPUT alone (no counter, no frame)."""
        C = self.config.cols
        data = self.mem[MemSpace.ACC][acc_addr:acc_addr + n * m].reshape(n, m, C)
        out = self.act.process_blocks(data, function, flags & ACT_PRECISION_MASK,
                                      param_entry, table=flags >> ACT_TABLE_SHIFT)
        self.mem[MemSpace.OUTPUT][out_addr:out_addr + n * m] = out.reshape(n * m, C)

    def activate_values(self, acc: np.ndarray, param_entry: int, function: int,
                        flags: int) -> np.ndarray:
        """The OUTPUT words ACTIVATEs of ``function`` and ``flags`` with one
        parameter entry make of ACC words ``acc`` (``(rows, cols)``, as ACC
        holds them), however many ACTIVATEs they take: the unit works
        element by element (no memory, no counter)."""
        return self.act.process(acc, function, flags & ACT_PRECISION_MASK, param_entry,
                                table=flags >> ACT_TABLE_SHIFT)

    def decode_words(self, space: int, data: bytes) -> np.ndarray:
        """The words of a scratchpad ``space`` as WRITE_MEM of ``data`` stores
        them (no memory, no counter); integer spaces only."""
        word = self._words[MemSpace(space)]
        if word.kind != "int" or MemSpace(space) not in self.mem:
            raise ValueError(f"{MemSpace(space).name} is not a scratchpad of integer words")
        raw = np.frombuffer(data, dtype=word.dtype).reshape((-1,) + word.shape)
        if word.width < 8 * word.element_bytes:
            raw = _wrap(raw.astype(np.int64), word.width)
        return raw.astype(self.mem[MemSpace(space)].dtype)

    def load_words(self, payload: bytes) -> None:
        """A LOAD's effect on its scratchpad alone (no counter, no frame); the
        caller checked the frame (:meth:`request_ok`)."""
        status, f = validate_instruction(self.config, Opcode.LOAD, payload)
        if status != Status.OK:
            raise ValueError(f"the device refuses this LOAD frame ({status.name})")
        nbytes = f["count"] * self._words[MemSpace(f["space"])].bytes
        self.write_words(f["space"], f["addr"], self.dram.read(f["dram_addr"], nbytes))

    def bulk_counts(self) -> tuple:
        """Everything the bulk methods count, now: the counters, the cycles,
        the link's delivered frames and :attr:`bulk_traffic`."""
        return (dict(self.counters), self.compute_cycles, self.link.delivered,
                tuple(self.bulk_traffic))

    def counts_since(self, before: tuple) -> tuple:
        """What the bulk methods counted since :meth:`bulk_counts` was ``before``."""
        counters, cycles, delivered, traffic = before
        now = self.bulk_counts()
        return ({k: (v - counters[k]) & _U32 for k, v in now[0].items() if v != counters[k]},
                now[1] - cycles,
                now[2] - delivered, tuple(a - b for a, b in zip(now[3], traffic)))

    def add_counts(self, delta: tuple) -> None:
        """Count again what :meth:`counts_since` measured: frames whose counts
        depend on the frames alone, not on the words they carry."""
        counters, cycles, delivered, traffic = delta
        c = self.counters
        for k, v in counters.items():
            c[k] = (c[k] + v) & _U32
        self.compute_cycles += cycles
        self.link.delivered += delivered
        t = self.bulk_traffic
        for i, v in enumerate(traffic):
            t[i] += v

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
            read = self.read_reg
            values = [read(rec["reg"]) for rec in f["records"]]
            return struct.pack(f"<{len(values)}I", *values)
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
        cycles = self._dma_cycles(op, f)
        self.compute_cycles += cycles
        self._add("DMA_BUSY", cycles)
        self._add("CYCLES", cycles)
        return b""

    def _dma_cycles(self, op: Opcode, f: dict) -> int:
        first, lines = dma_lines(self.config, f)
        return dma_cycles(self.config, op, f,
                          self.dram.transfer_cycles(first, lines, op == Opcode.STORE))

    def _add(self, name: str, value: int) -> None:
        self.counters[name] = (self.counters[name] + value) & 0xFFFFFFFF

    # ------------------------------------------------------------ registers

    def read_reg(self, addr: int) -> int:
        r = self._regs_by_addr[addr]
        if r.name in self.identity:
            return self.identity[r.name]
        if r.name in self.counters:
            return self.counters[r.name]
        return self.regs.get(r.name, 0)

    def _write_reg(self, addr: int, value: int) -> None:
        r = self._regs_by_addr[addr]
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

    def dram_words(self, space: int, dram_addr: int, count: int) -> np.ndarray:
        """The ``count`` words of a scratchpad ``space`` that a LOAD from byte
        ``dram_addr`` of device memory writes, as they land there (no frame,
        no counter); shape ``(count, *word shape)``."""
        word = self._words[MemSpace(space)]
        if word.kind != "int":
            raise ValueError(f"{MemSpace(space).name} does not hold integer words")
        raw = np.frombuffer(self.dram.read(dram_addr, count * word.bytes), dtype=word.dtype)
        raw = raw.reshape((count,) + word.shape)
        if word.width < 8 * word.element_bytes:
            raw = _wrap(raw.astype(np.int64), word.width)
        return raw

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

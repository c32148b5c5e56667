"""The host runtime: one Python API over the emulator, the RTL simulation and boards.

::

    from hetaccel.host import Accelerator
    with Accelerator.open("emu") as acc:              # or "rtl", or "serial:/dev/ttyUSB1@3000000"
        c = acc.matmul(a_int8, b_int8)                # int32, exact
        y = acc.linear(x, w, bias, activation="gelu") # float in -> float out (quantized on device)
        print(acc.profile.report())

Every backend runs the same code below: operations become instruction frames
(:mod:`hetaccel.spec` layouts, :mod:`hetaccel.spec.link` framing) and only
the :class:`~hetaccel.host.transport.Transport` differs.

Scheduling.  An operation is cut into *segments*.  A segment loads the data of
one output group (a block of rows x a group of ``cols``-wide column tiles)
into one half of each scratchpad, queues its compute instructions, and reads
back the *previous* group's results, which were computed into the other half
of the accumulator/output memory: the link streams the next loads and the last
results while the queued compute runs (double buffering; the device's hazard
checks order a load after any queued instruction still using its rows).
Frames go out with up to ``config.link_buffers`` outstanding, so the device
never has to answer BUSY.

Faults.  A segment is idempotent as a whole: it rewrites every word it reads
before it reads it (the first GEMM of a group overwrites, the ADAM pass is
preceded by the write of its optimizer state) and reads only what earlier,
completed segments left.  So whatever goes wrong inside a segment (a timeout, a
corrupted or missing reply, a BUSY or error status) the runtime drains the
link, resynchronises it (a run of zero bytes, then a NOP) and resumes at the
first unacknowledged frame when every frame that may have run unseen simply
overwrites its outputs, else replays the whole segment — a GEMM with
accumulate (or an ADAM pass) is never applied twice on top of itself.
After ``retries`` failed attempts it raises :class:`LinkError` (or
:class:`DeviceStatusError` for a status the device keeps answering).  The
device's ``FRAMES`` counter must account for every frame the host saw
acknowledged; when it does not, the device was reset (its memories lost) and
:class:`DeviceResetError` is raised — a result is never returned from a device
that reset during the operation.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from functools import lru_cache

import numpy as np

from ..spec import (ACT_TABLE_SHIFT, ADAM_HYPERPARAMETERS, DEFAULT_CONFIG, GEMM_ACCUMULATE,
                    INSTRUCTIONS, AcceleratorConfig, ActivationFunction, ActivationPrecision,
                    MemSpace, Opcode, Status, config_from_identity, encode_instruction, mem_depth,
                    identity_words, mem_word, register_map)
from .profiler import OpRecord, Profile, board_params
from ..spec.link import FrameError, ReplyDecoder, encode_request
from .rtl_transport import RtlTransport
from .transport import EmuTransport, FaultyTransport, SerialTransport, Transport, parse_serial_url

__all__ = ["Accelerator", "AcceleratorError", "LinkError", "DeviceStatusError",
           "DeviceResetError"]



def _with_pending_read(reqs: list, pending):
    """One segment: its own requests, then the previous segment's read-back.

    The read of one scratchpad half rides with the compute on the other half, so
    results stream out while the device works.  ``pending`` is ``(requests,
    callback)`` or None; the returned callback hands the callback the replies
    that belong to the read-back.
    """
    if pending is None:
        return reqs, None
    prev_reqs, consume = pending
    n_own = len(reqs)
    return reqs + prev_reqs, lambda replies: consume(replies[n_own:])


class AcceleratorError(RuntimeError):
    """Base class of the runtime's device errors."""


class LinkError(AcceleratorError):
    """The device did not answer correctly within the retry budget."""


class DeviceStatusError(AcceleratorError):
    """The device kept rejecting a frame with an error status."""


class DeviceResetError(AcceleratorError):
    """The device reset during an operation; its result is lost."""


class _Fault(Exception):
    def __init__(self, kind: str, detail: str, status: int | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.status = status


_ACTIVATIONS = {None: ActivationFunction.NONE, "none": ActivationFunction.NONE,
                "relu": ActivationFunction.RELU, "sigmoid": ActivationFunction.SIGMOID,
                "tanh": ActivationFunction.TANH, "gelu": ActivationFunction.GELU}
_TABLE_FUNCS = (ActivationFunction.SIGMOID, ActivationFunction.TANH, ActivationFunction.GELU)
_Q412 = 1 << 12


def _activation_kind(kind) -> ActivationFunction:
    if isinstance(kind, ActivationFunction):
        return kind
    key = kind.lower() if isinstance(kind, str) else kind
    if key not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of None, 'relu', 'sigmoid', 'tanh', 'gelu', "
                         f"got {kind!r}")
    return _ACTIVATIONS[key]


def _precision(p) -> ActivationPrecision:
    if isinstance(p, ActivationPrecision):
        return p
    if isinstance(p, str) and p.upper() in ActivationPrecision.__members__:
        return ActivationPrecision[p.upper()]
    raise ValueError(f"precision must be 'int8' or 'fixed16', got {p!r}")


@lru_cache(maxsize=None)
def _packer(op: Opcode) -> struct.Struct:
    """The fixed fields of ``op`` as a struct, derived from :data:`INSTRUCTIONS`.

    :func:`~hetaccel.spec.encode_instruction` produces the same bytes with a
    range check per field; the scheduler's thousands of GEMM/ACTIVATE frames
    take this path (their fields are in range by construction and the device
    checks them again).
    """
    codes = {1: "B", 2: "H", 4: "I"}
    return struct.Struct("<" + "".join(codes[n] for _, n in INSTRUCTIONS[op].fields))


def _gemm(a_addr: int, w_addr: int, acc_addr: int, m: int, flags: int) -> tuple:
    return Opcode.GEMM, _packer(Opcode.GEMM).pack(a_addr, w_addr, acc_addr, m, flags)


def _accumulates(req: tuple) -> bool:
    """Whether executing ``req`` twice differs from executing it once."""
    op, payload = req
    if op == Opcode.ADAM:
        return True
    return op == Opcode.GEMM and bool(payload[-1] & GEMM_ACCUMULATE)


# ---------------------------------------------------------------------------
# the link session: sequence numbers, windowed exchange, recovery


class _Link:
    """Frames in, replies out, with bounded retries of whole segments."""

    def __init__(self, transport: Transport, config: AcceleratorConfig, *, timeout: float,
                 retries: int):
        self.t = transport
        self.config = config
        self.timeout = timeout
        self.retries = retries
        self.window = config.link_buffers
        self.decoder = ReplyDecoder(0xFFFF)
        self.seq = 0
        self.frames_ok = 0           # OK replies since the FRAMES baseline
        self.frames_base = 0         # FRAMES register at the baseline
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_sent = 0
        self.retry_count = 0
        self.fault_log: list[str] = []
        self._frames_reg: int | None = None   # FRAMES register, once baselined
        self._progress = (0, 0)

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFF
        return self.seq

    def _send(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        self.t.send(data)

    def _receive(self, frames: int) -> list:
        data = self.t.receive(self.timeout, frames)
        self.bytes_received += len(data)
        return self.decoder.feed(data) if data else None

    def _attempt(self, reqs: list, start: int, replies: list) -> list:
        n = len(reqs)
        outstanding: deque = deque()
        nxt = start
        done = start
        maxp = self.config.max_payload
        # On a fault, frames before ``done`` were acknowledged (executed once, in
        # order); those in [done, nxt) may or may not have executed.
        self._progress = (done, nxt)
        while done < n:
            if nxt < n and len(outstanding) < self.window:
                out = bytearray()
                while nxt < n and len(outstanding) < self.window:
                    op, payload = reqs[nxt]
                    seq = self._next_seq()
                    out += encode_request(op, seq, payload, max_payload=maxp)
                    outstanding.append((nxt, seq))
                    nxt += 1
                    self.frames_sent += 1
                self._progress = (done, nxt)
                self._send(bytes(out))
            items = self._receive(1)
            if items is None:
                idx, seq = outstanding[0]
                raise _Fault("timeout", f"no reply to {Opcode(reqs[idx][0]).name} "
                                        f"(seq {seq}) within {self.timeout:g} s")
            for item in items:
                if isinstance(item, FrameError):
                    raise _Fault("corrupt reply", f"reply failed its {item.status.name} check")
                live = [s for _, s in outstanding]
                if item.seq not in live:
                    continue  # a late reply from an abandoned attempt
                idx, seq = outstanding[0]
                if item.seq != seq:
                    raise _Fault("lost reply", f"reply to seq {seq} missing "
                                               f"(got seq {item.seq})")
                if item.code != Status.OK:
                    name = Status(item.code).name if item.code in Status._value2member_map_ \
                        else f"0x{item.code:02X}"
                    raise _Fault("status", f"{Opcode(reqs[idx][0]).name} answered {name}",
                                 status=item.code)
                replies[idx] = item.payload
                outstanding.popleft()
                self.frames_ok += 1
                done += 1
                self._progress = (done, nxt)
        return replies

    def run(self, reqs: list) -> list:
        """Execute ``reqs`` (``(opcode, payload)``) in order; their reply payloads.

        After a fault the list resumes at the first unacknowledged frame when
        every frame that may have executed without its reply being seen
        overwrites what it writes (loads, reads, GEMM without accumulate,
        ACTIVATE, register writes): executing it again, in order, gives the
        same state.  If one of them accumulates (GEMM with accumulate, ADAM),
        the whole list is replayed from its start, so the list must be
        idempotent as a whole (see the module docstring).
        """
        last: _Fault | None = None
        replies: list = [None] * len(reqs)
        start = 0
        for attempt in range(self.retries + 1):
            try:
                return self._attempt(reqs, start, replies)
            except _Fault as fault:
                last = fault
                self.fault_log.append(str(fault))
                if attempt == self.retries:
                    break
                self.retry_count += 1
                first, end = self._progress
                self.recover()
                start = 0 if any(_accumulates(r) for r in reqs[first:end]) else first
        if last.kind == "status" and last.status not in (Status.BUSY, Status.BAD_CRC):
            raise DeviceStatusError(f"device rejected a frame {self.retries + 1} times: {last}")
        raise LinkError(f"giving up after {self.retries + 1} attempts: {last}")

    def _single(self, op: int, payload: bytes = b"") -> bytes:
        """One frame, one reply, no retry (used while recovering)."""
        seq = self._next_seq()
        self._send(encode_request(op, seq, payload, max_payload=self.config.max_payload))
        self.frames_sent += 1
        while True:
            items = self._receive(1)
            if items is None:
                raise _Fault("timeout", f"no reply to {Opcode(op).name} while resynchronising")
            for item in items:
                if isinstance(item, FrameError) or item.seq != seq:
                    continue
                if item.code != Status.OK:
                    raise _Fault("status", f"{Opcode(op).name} answered {item.code}", item.code)
                self.frames_ok += 1
                return item.payload

    def recover(self) -> None:
        """Drain, resynchronise the device's parser, and check it did not reset."""
        while self._receive(self.window) is not None:
            pass
        self.decoder.reset()
        for _ in range(self.retries + 1):
            # max_payload + 8 non-sync bytes end any partial frame in the device.
            self._send(bytes(self.config.max_payload + 8))
            try:
                self._single(Opcode.NOP)
                # The frame-count check is a frame too: a fault in its reply is
                # one more resync attempt, never an internal error for the caller.
                self.check_frames()
                return
            except _Fault as fault:
                self.fault_log.append(f"resync: {fault}")
                while self._receive(self.window) is not None:
                    pass
                self.decoder.reset()
        raise LinkError(f"device does not answer after {self.retries + 1} resync attempts")

    def read_regs(self, addrs: list[int]) -> list[int]:
        payload = encode_instruction(Opcode.READ_REG, *({"reg": a} for a in addrs))
        (reply,) = self.run([(Opcode.READ_REG, payload)])
        return [int.from_bytes(reply[4 * i:4 * i + 4], "little") for i in range(len(addrs))]

    def baseline(self, frames_reg: int) -> None:
        """Start counting acknowledged frames from the device's FRAMES now."""
        self._frames_reg = frames_reg
        (value,) = self.read_regs([frames_reg])
        self.frames_base = value
        self.frames_ok = 0

    def check_frames(self, frames_value: int | None = None) -> None:
        """Raise DeviceResetError if the device delivered fewer frames than
        the host saw acknowledged since the baseline."""
        if self._frames_reg is None:
            return
        if frames_value is None:
            payload = encode_instruction(Opcode.READ_REG, {"reg": self._frames_reg})
            before = self.frames_ok
            frames_value = int.from_bytes(self._single(Opcode.READ_REG, payload)[:4], "little")
            acked = before
        else:
            acked = self.frames_ok - 1  # the READ_REG that returned the value
        delivered = (frames_value - self.frames_base) & 0xFFFFFFFF
        if delivered >= 1 << 31:
            delivered -= 1 << 32  # the counter went backwards: cleared by a reset
        if delivered < acked:
            raise DeviceResetError(
                f"the device reset: it reports {delivered} frames delivered since the session "
                f"baseline but acknowledged {acked}; scratchpad contents are lost")


# ---------------------------------------------------------------------------
# planning


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _candidates(limit: int) -> list[int]:
    out = {limit}
    p = 1
    while p < limit:
        out.add(p)
        p *= 2
    return sorted(out)


def _w_half(cfg: AcceleratorConfig) -> int:
    """Rows of one WEIGHT buffer: half the memory, or all of it when half
    cannot hold a tile (then loads wait for the compute instead of overlapping)."""
    return cfg.weight_depth // 2 if cfg.weight_depth // 2 >= cfg.rows else cfg.weight_depth


class _GemmPlan:
    """Block sizes of a tiled GEMM on this config (see :meth:`Accelerator._plan`)."""

    def __init__(self, M, KT, NT, mb, nb, kc, resident):
        self.M, self.KT, self.NT = M, KT, NT
        self.mb, self.nb, self.kc, self.resident = mb, nb, kc, resident

    def __repr__(self):
        return (f"_GemmPlan(mb={self.mb}, nb={self.nb}, kc={self.kc}, "
                f"resident={self.resident})")


# ---------------------------------------------------------------------------
# the user API


class Accelerator:
    """A connection to one accelerator (emulated, simulated or on a board).

    Use :meth:`open`.  Operations accept NumPy arrays of any shape the config
    can tile, check them (``TypeError``/``ValueError`` naming the bad value),
    run them on the device and return NumPy arrays.  :attr:`profile` records
    every operation.
    """

    def __init__(self, transport: Transport, config: AcceleratorConfig | None = None, *,
                 timeout: float | None = None, retries: int = 4, board: str | None = None,
                 verify: bool = True):
        if not isinstance(transport, Transport):
            raise TypeError(f"transport must be a Transport, not {type(transport).__name__}")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
            raise ValueError(f"retries must be an integer in [0, 100], got {retries!r}")
        self.transport = transport
        self.backend = transport.kind
        self._closed = False
        probe_config = config or DEFAULT_CONFIG
        if timeout is None:
            timeout = {"emu": 1.0, "rtl": 0.02}.get(transport.kind, 0.5)
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.link = _Link(transport, probe_config, timeout=float(timeout), retries=retries)
        try:
            self.link.run([(Opcode.NOP, b"")])
            ident = self._identity()
            reported = config_from_identity(ident)
            if config is None:
                config = reported
            elif verify:
                self._check_reported(config, reported)
            if not isinstance(config, AcceleratorConfig):
                raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
            self.config = config
            self.link.config = config
            self.link.window = config.link_buffers
            self.regs = {r.name: r.addr for r in register_map(config).values()}
            self.link.baseline(self.regs["FRAMES"])
        except BaseException:
            transport.close()
            raise
        self.profile = Profile(self.backend, board_params(board, config))
        self._tables: dict[int, bytes] = {}

    # --- opening and closing -------------------------------------------------

    @classmethod
    def open(cls, target: str = "emu", *, config: AcceleratorConfig | None = None,
             sim: str = "verilator", timeout: float | None = None, retries: int = 4,
             board: str | None = None, faults=None, **transport_options) -> "Accelerator":
        """Connect to an accelerator.

        Parameters
        ----------
        target : str
            ``"emu"`` (the bit-exact device model in this process), ``"rtl"``
            (the generated Device in a simulator subprocess) or
            ``"serial:PORT[@BAUD]"`` (a board; e.g. ``"serial:/dev/ttyUSB1@3000000"``).
        config : AcceleratorConfig, optional
            The accelerator to emulate or simulate (default
            :data:`~hetaccel.spec.DEFAULT_CONFIG`); on a board, the config the
            device must report (default: whatever it reports).
        sim : {"verilator", "icarus"}
            Simulator of the ``rtl`` backend.
        timeout : float
            Seconds of device time to wait for a reply before retrying.
        retries : int
            Attempts after the first before an operation raises.
        board : str
            Board the profiler projects wall time onto (default: the config's
            clock and baud).
        faults : FaultPlan, optional
            Wrap the transport in a :class:`~hetaccel.host.transport.FaultyTransport`.
        """
        if not isinstance(target, str):
            raise TypeError(f"target must be a string, not {type(target).__name__}")
        if config is not None and not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        if target == "emu":
            transport = EmuTransport(config or DEFAULT_CONFIG, **transport_options)
            config = config or DEFAULT_CONFIG
        elif target == "rtl":
            config = config or DEFAULT_CONFIG
            transport = RtlTransport(config, sim, **transport_options)
        elif target.startswith("serial:"):
            port, baud = parse_serial_url(target)
            transport = SerialTransport(port, baud or (config or DEFAULT_CONFIG).baud,
                                        **transport_options)
        else:
            raise ValueError(f"target must be 'emu', 'rtl' or 'serial:PORT[@BAUD]', got {target!r}")
        if faults is not None:
            transport = FaultyTransport(transport, faults)
        return cls(transport, config, timeout=timeout, retries=retries, board=board)

    def close(self) -> None:
        """Release the device (stops the simulator of the ``rtl`` backend)."""
        if not self._closed:
            self._closed = True
            self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # --- identity and counters ------------------------------------------------

    def _identity(self) -> dict:
        # The identity registers are whatever the spec defines: a register added
        # there is read here without a second list to keep in step.
        names = list(identity_words(DEFAULT_CONFIG))
        addrs = {r.name: r.addr for r in register_map(DEFAULT_CONFIG).values()}
        values = self.link.read_regs([addrs[n] for n in names])
        return dict(zip(names, values))

    @staticmethod
    def _check_reported(expected: AcceleratorConfig, reported: AcceleratorConfig) -> None:
        exp, rep = expected.to_dict(), reported.to_dict()
        diff = [f"{k}: expected {exp[k]!r}, device has {rep[k]!r}"
                for k in rep if k in exp and exp[k] != rep[k]]
        if diff:
            raise ValueError("the device's identity registers disagree with the config: "
                             + "; ".join(diff))

    def identify(self) -> dict:
        """The device's identity registers, decoded to its config."""
        self._check_open()
        return config_from_identity(self._identity()).to_dict()

    def _counters(self) -> dict:
        from ..spec import COUNTERS

        names = [n for n, _ in COUNTERS]
        values = self.link.read_regs([self.regs[n] for n in names])
        return dict(zip(names, values))

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this Accelerator is closed")

    # --- operation bookkeeping -----------------------------------------------

    def _begin(self):
        self._check_open()
        link = self.link
        return (time.perf_counter(), self._counters(), link.bytes_sent, link.bytes_received,
                link.frames_sent, link.retry_count, len(link.fault_log))

    def _end(self, start, op: str, shape: dict, macs: int = 0) -> OpRecord:
        t0, c0, bs, br, fs, rc, fl = start
        link = self.link
        try:
            link.run([(Opcode.SYNC, b"")])
            c1 = self._counters()
            link.check_frames(c1["FRAMES"])
        except AcceleratorError as exc:
            self._invalidate(exc)
            raise
        d = {k: (c1[k] - c0[k]) & 0xFFFFFFFF for k in c1}
        rec = OpRecord(
            op=op, shape=shape, backend=self.backend, wall_s=time.perf_counter() - t0,
            device_cycles=d["CYCLES"],
            busy_cycles={"gemm": d["GEMM_BUSY"], "activation": d["ACT_BUSY"],
                         "adam": d["ADAM_BUSY"]},
            device_bytes_in=d["BYTES_IN"], device_bytes_out=d["BYTES_OUT"],
            host_bytes_sent=link.bytes_sent - bs, host_bytes_received=link.bytes_received - br,
            frames=link.frames_sent - fs, retries=link.retry_count - rc,
            faults=link.fault_log[fl:], macs=macs, peak_macs_per_cycle=self.config.macs,
            board=self.profile.board, counters=d)
        self.profile.add(rec)
        return rec

    def _run(self, segments) -> None:
        """Run each ``(requests, on_replies)`` segment; a DeviceResetError or
        retry exhaustion leaves the caches invalid."""
        try:
            for reqs, done in segments:
                if not reqs:
                    continue
                replies = self.link.run(reqs)
                if done is not None:
                    done(replies)
        except AcceleratorError as exc:
            self._invalidate(exc)
            raise

    def _invalidate(self, exc: Exception) -> None:
        """Forget what the host believed was on the device; after a reset,
        start counting frames afresh so the session stays usable."""
        self._tables.clear()
        if isinstance(exc, DeviceResetError):
            try:
                self.link.baseline(self.regs["FRAMES"])
            except AcceleratorError:
                pass

    # --- request helpers -------------------------------------------------------

    def _write_mem(self, space: MemSpace, addr: int, data: bytes) -> list:
        wb = mem_word(self.config, space).bytes
        per = max(1, (self.config.max_payload - 5) // wb) * wb
        reqs = []
        for off in range(0, len(data), per):
            chunk = data[off:off + per]
            reqs.append((Opcode.WRITE_MEM, encode_instruction(
                Opcode.WRITE_MEM, space=int(space), addr=addr + off // wb, data=chunk)))
        return reqs

    def _read_mem(self, space: MemSpace, addr: int, count: int) -> list:
        wb = mem_word(self.config, space).bytes
        per = max(1, min(0xFFFF, self.config.max_payload // wb))
        return [(Opcode.READ_MEM, encode_instruction(Opcode.READ_MEM, space=int(space),
                                                      addr=addr + i, count=min(per, count - i)))
                for i in range(0, count, per)]

    def _unpack(self, space: MemSpace, replies: list) -> np.ndarray:
        word = mem_word(self.config, space)
        arr = np.frombuffer(b"".join(replies), dtype=word.dtype)
        return arr.reshape((-1,) + word.shape)

    # --- input checks ------------------------------------------------------------

    def _int_operand(self, name: str, x, ndim: int | None = 2) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            if isinstance(x, (list, tuple)):
                x = np.asarray(x)
            else:
                raise TypeError(f"{name} must be a numpy array, not {type(x).__name__}")
        if x.dtype.kind not in "iu" or x.dtype == np.bool_:
            raise TypeError(f"{name} must be an integer (int8) array, got dtype {x.dtype}")
        if ndim is not None and x.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
        if x.size == 0:
            raise ValueError(f"{name} must not be empty, got shape {x.shape}")
        lo, hi = self.config.operand_min, self.config.operand_max
        xmin, xmax = int(x.min()), int(x.max())
        if xmin < lo or xmax > hi:
            bad = xmin if xmin < lo else xmax
            idx = tuple(int(i) for i in np.argwhere(x == bad)[0])
            raise ValueError(f"{name}[{', '.join(map(str, idx))}] = {bad} does not fit the "
                             f"{self.config.operand_bits}-bit operands [{lo}, {hi}]")
        return x

    @staticmethod
    def _float_array(name: str, x, ndim: int | None = None) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            if isinstance(x, (list, tuple, float, int)):
                x = np.asarray(x, dtype=np.float64)
            else:
                raise TypeError(f"{name} must be a numpy array, not {type(x).__name__}")
        if x.dtype.kind != "f":
            raise TypeError(f"{name} must be a float array, got dtype {x.dtype}")
        if ndim is not None and x.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
        if x.size == 0:
            raise ValueError(f"{name} must not be empty, got shape {x.shape}")
        bad = ~np.isfinite(x)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name}[{', '.join(map(str, idx))}] = {x[idx]} is not finite")
        return x

    # --- GEMM scheduling -------------------------------------------------------

    def _plan(self, M: int, K: int, N: int, *, linear: bool) -> _GemmPlan:
        """Block sizes minimising link bytes (frames included) within the scratchpads.

        A row block of ``mb`` rows and a group of ``nb`` column tiles form one
        accumulator region (two regions alternate); ``kc`` K-tiles of the block's
        activations and of the group's weights fit one half of INPUT / WEIGHT.
        When all K-tiles fit (``resident``) the activations are loaded once per
        row block instead of once per group.
        """
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        KT, NT = _ceil(K, R), _ceil(N, C)
        in_half, w_half, acc_half = cfg.input_depth // 2, _w_half(cfg), cfg.acc_depth // 2
        nb_cap = NT
        if linear:
            acc_half = min(acc_half, cfg.output_depth // 2)
            nb_cap = min(nb_cap, max(1, cfg.act_param_depth // 2))
        best = None
        for mb in _candidates(min(M, acc_half, in_half)):
            for nb in _candidates(min(nb_cap, max(1, acc_half // mb))):
                kc = min(KT, in_half // mb, w_half // (nb * R))
                if kc < 1:
                    continue
                kc = _ceil(KT, _ceil(KT, kc))  # equal chunks
                resident = kc == KT
                mblocks, ngroups = _ceil(M, mb), _ceil(NT, nb)
                a_bytes = M * KT * R * (1 if resident else ngroups)
                w_bytes = KT * R * NT * C * mblocks
                gemms = mblocks * NT * KT
                frames = gemms + (a_bytes + w_bytes) // max(1, cfg.max_payload - 5)
                frames += mblocks * ngroups * (3 + (nb if linear else 0))
                cost = a_bytes + w_bytes + 30 * frames
                if best is None or cost < best[0]:
                    best = (cost, _GemmPlan(M, KT, NT, mb, nb, kc, resident))
        if best is None:
            raise ValueError(f"the config's scratchpads cannot hold one tile: input_depth="
                             f"{cfg.input_depth}, weight_depth={cfg.weight_depth}, "
                             f"rows={R}")  # pragma: no cover - config validation prevents it
        return best[1]

    def _gemm_segments(self, a: np.ndarray, b: np.ndarray, *, finish, act=None):
        """Segments computing ``a @ b`` group by group.

        ``finish(group, replies)`` consumes a group's result words: ACC rows for
        a matmul, OUTPUT rows when ``act`` (per-group ACTIVATE parameters) is given.
        """
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        M, K = a.shape
        N = b.shape[1]
        plan = self._plan(M, K, N, linear=act is not None)
        KT, NT, mb, nb, kc = plan.KT, plan.NT, plan.mb, plan.nb, plan.kc
        in_dt = mem_word(cfg, MemSpace.INPUT).dtype
        w_dt = mem_word(cfg, MemSpace.WEIGHT).dtype
        # Zero padding to whole tiles; the pad rows/columns contribute nothing.
        ap = np.zeros((M, KT * R), dtype=in_dt)
        ap[:, :K] = a
        bp = np.zeros((KT * R, NT * C), dtype=w_dt)
        bp[:K, :N] = b
        # INPUT word (k-tile t, row r) = A[r, t*R:(t+1)*R]; WEIGHT tile (t, j) = rows of B.
        a_tiles = ap.reshape(M, KT, R).transpose(1, 0, 2)             # (KT, M, R)
        b_tiles = bp.reshape(KT, R, NT, C).transpose(0, 2, 1, 3)      # (KT, NT, R, C)
        in_half, w_half = cfg.input_depth // 2, _w_half(cfg)
        w_slots = cfg.weight_depth // w_half
        acc_half = cfg.acc_depth // 2
        out_half = cfg.output_depth // 2 if act is not None else 0
        chunk_no = 0
        group_no = 0
        a_slot = 0
        pending_read = None  # (reqs, callback) of the previous group
        for m0 in range(0, M, mb):
            mm = min(mb, M - m0)
            if plan.resident:
                a_slot = (m0 // mb) % 2
                a_base = a_slot * in_half
                a_load = self._write_mem(MemSpace.INPUT, a_base,
                                         np.ascontiguousarray(a_tiles[:, m0:m0 + mm]).tobytes())
            for n0 in range(0, NT, nb):
                nn = min(nb, NT - n0)
                region = (group_no % 2) * acc_half
                reqs = []
                if plan.resident and n0 == 0:
                    reqs += a_load
                if act is not None:
                    reqs += act.params(group_no, n0, nn)
                for t0 in range(0, KT, kc):
                    tt = min(kc, KT - t0)
                    half = chunk_no % 2
                    chunk_no += 1
                    w_base = (half % w_slots) * w_half
                    wdata = np.ascontiguousarray(b_tiles[t0:t0 + tt, n0:n0 + nn]).tobytes()
                    reqs += self._write_mem(MemSpace.WEIGHT, w_base, wdata)
                    if plan.resident:
                        a_base_t = a_slot * in_half + t0 * mm
                    else:
                        a_base_t = half * in_half
                        reqs += self._write_mem(
                            MemSpace.INPUT, a_base_t,
                            np.ascontiguousarray(a_tiles[t0:t0 + tt, m0:m0 + mm]).tobytes())
                    for t in range(tt):
                        for j in range(nn):
                            reqs.append(_gemm(a_base_t + t * mm, w_base + (t * nn + j) * R,
                                              region + j * mm, mm,
                                              GEMM_ACCUMULATE if t0 + t > 0 else 0))
                if act is not None:
                    obase = (group_no % 2) * out_half
                    reqs += act.activates(group_no, region, obase, mm, nn)
                    read = self._read_mem(MemSpace.OUTPUT, obase, nn * mm)
                else:
                    read = self._read_mem(MemSpace.ACC, region, nn * mm)
                yield _with_pending_read(reqs, pending_read)
                key = (m0, mm, n0, nn)
                pending_read = (read, lambda replies, key=key: finish(key, replies))
                group_no += 1
        if pending_read is not None:
            reqs, cb = pending_read
            yield reqs, cb

    # --- operations ---------------------------------------------------------------

    def matmul(self, a, b) -> np.ndarray:
        """``a @ b`` for integer operands of the config's width: exact, int32.

        Parameters
        ----------
        a : (M, K) int8 array
        b : (K, N) int8 array

        Returns
        -------
        (M, N) int32 array (int64 if the config's accumulators are wider than 32 bits).
        """
        a = self._int_operand("a", a)
        b = self._int_operand("b", b)
        if a.shape[1] != b.shape[0]:
            raise ValueError(f"inner dimensions differ: a is {a.shape}, b is {b.shape}")
        M, K = a.shape
        N = b.shape[1]
        self._check_k(K)
        cfg = self.config
        out_dt = np.int32 if cfg.acc_bits <= 32 else np.int64
        out = np.zeros((M, _ceil(N, cfg.cols) * cfg.cols), dtype=out_dt)
        C = cfg.cols

        def finish(key, replies):
            m0, mm, n0, nn = key
            words = self._unpack(MemSpace.ACC, replies)                # (nn*mm, C)
            out[m0:m0 + mm, n0 * C:(n0 + nn) * C] = \
                words.reshape(nn, mm, C).transpose(1, 0, 2).reshape(mm, nn * C)

        start = self._begin()
        self._run(self._gemm_segments(a, b, finish=finish))
        self._end(start, "matmul", {"m": M, "k": K, "n": N}, macs=M * K * N)
        return out[:, :N]

    def _check_k(self, K: int) -> None:
        if K > self.config.max_k:
            raise ValueError(f"reduction length k={K} exceeds the config's max_k="
                             f"{self.config.max_k}: the {self.config.acc_bits}-bit accumulators "
                             f"could wrap")

    def linear(self, x, w, bias=None, activation=None, *, scale=None, multiplier=None,
               shift=None, table=None, table_scales=None, precision="int8", out_scale=None):
        """``activation(x @ w.T + bias)`` through the matmul engine and the
        requantisation/activation unit (``w`` is ``(out_features, in_features)``
        as in ``torch.nn.functional.linear``).

        Integer path (``x`` and ``w`` int8): the device computes
        ``y = requant(x @ w.T + bias)`` with per-output-channel ``scale`` (a
        float, converted by :func:`~hetaccel.sim.activation_model.quantize_multiplier`)
        or explicit ``multiplier``/``shift``, then the activation: NONE/RELU on the
        code, SIGMOID/TANH/GELU through a 256-entry table (``table``, or built
        from ``table_scales=(in_scale, out_scale)``).  ``bias`` is int32.  Returns
        int8 codes (``precision="int8"``) or int16 fixed point
        (``precision="fixed16"``: Q4.12, sigmoid/tanh Q1.14).

        Float path (``x`` and ``w`` floating point): ``x`` is quantised per
        tensor and ``w`` per output channel to int8, ``bias`` to int32 at the
        accumulator scale, the device runs the 16-bit fixed-point path
        (``out_scale``, per channel or scalar, is the value of one Q4.12 unit for
        NONE/RELU; default: a bound from the operands' norms), and the result is
        dequantised to float32.  Sigmoid/tanh/GELU see the pre-activation in
        Q4.12, i.e. clipped to [-8, 8).
        """
        fn = _activation_kind(activation)
        if not isinstance(x, np.ndarray) or not isinstance(w, np.ndarray):
            bad = "x" if not isinstance(x, np.ndarray) else "w"
            raise TypeError(f"{bad} must be a numpy array, not "
                            f"{type(x if bad == 'x' else w).__name__}")
        if x.dtype.kind == "f" or w.dtype.kind == "f":
            if x.dtype.kind != "f" or w.dtype.kind != "f":
                raise TypeError(f"x and w must both be float or both int8, got {x.dtype} and "
                                f"{w.dtype}")
            return self._linear_float(x, w, bias, fn, out_scale)
        return self._linear_int(x, w, bias, fn, scale=scale, multiplier=multiplier, shift=shift,
                                table=table, table_scales=table_scales,
                                precision=_precision(precision))

    def _check_linear_shapes(self, x, w):
        if x.ndim < 1 or w.ndim != 2:
            raise ValueError(f"w must be 2-D (out_features, in_features), got shape {w.shape}")
        if x.shape[-1] != w.shape[1]:
            raise ValueError(f"x has {x.shape[-1]} features but w expects {w.shape[1]} "
                             f"(x {x.shape}, w {w.shape})")

    def _channel_param(self, name, value, n, lo, hi, dtype=np.int64):
        arr = np.asarray(value)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name} must be integer, got dtype {arr.dtype}")
        arr = np.broadcast_to(arr, (n,)) if arr.ndim == 0 else arr
        if arr.shape != (n,):
            raise ValueError(f"{name} must be a scalar or have shape ({n},), got {arr.shape}")
        if arr.size and (arr.min() < lo or arr.max() > hi):
            bad = arr.min() if arr.min() < lo else arr.max()
            raise ValueError(f"{name} value {int(bad)} outside [{lo}, {hi}]")
        return arr.astype(dtype)

    def _linear_int(self, x, w, bias, fn, *, scale, multiplier, shift, table, table_scales,
                    precision, op_name="linear", float_meta=None):
        from ..sim.activation_model import (INT32_MAX, INT32_MIN, MULTIPLIER_MAX, SHIFT_MAX,
                                            build_table, quantize_multiplier)

        self._check_linear_shapes(x, w)
        x = self._int_operand("x", x, ndim=None)
        w = self._int_operand("w", w)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        M, K = x2.shape
        N = w.shape[0]
        self._check_k(K)
        if not self.config.has_activation:
            raise ValueError("this config has no activation unit (has_activation=False); "
                             "use matmul()")
        if scale is not None:
            if multiplier is not None or shift is not None:
                raise ValueError("give either scale or multiplier/shift, not both")
            s = np.asarray(scale, dtype=np.float64)
            s = np.broadcast_to(s, (N,)) if s.ndim == 0 else s
            if s.shape != (N,):
                raise ValueError(f"scale must be a scalar or have shape ({N},), got {s.shape}")
            mult, sh = quantize_multiplier(s)
        elif multiplier is not None and shift is not None:
            mult, sh = multiplier, shift
        else:
            raise ValueError("the int8 path needs the requantisation: scale=, or multiplier= "
                             "and shift=")
        mult = self._channel_param("multiplier", mult, N, 0, MULTIPLIER_MAX)
        sh = self._channel_param("shift", sh, N, 0, SHIFT_MAX)
        b = self._channel_param("bias", 0 if bias is None else bias, N, INT32_MIN, INT32_MAX)
        slot = 0
        tab_bytes = None
        if precision == ActivationPrecision.INT8 and fn in _TABLE_FUNCS:
            if table is None:
                if table_scales is None:
                    raise ValueError(f"{fn.name.lower()} in int8 needs table= (256 int8) or "
                                     f"table_scales=(in_scale, out_scale)")
                table = build_table(fn, *table_scales)
            tab = np.asarray(table)
            if tab.shape != (256,) or tab.dtype.kind not in "iu" or tab.min() < -128 \
                    or tab.max() > 127:
                raise ValueError(f"table must be 256 int8 entries, got shape {tab.shape}, "
                                 f"dtype {tab.dtype}")
            tab_bytes = tab.astype(np.int8).tobytes()
            slot = {ActivationFunction.SIGMOID: 0, ActivationFunction.TANH: 1,
                    ActivationFunction.GELU: 2}[fn] % self.config.act_tables
        act = _ActPlan(self, fn, precision, b, mult, sh, slot)
        cfg = self.config
        C = cfg.cols
        out = np.zeros((M, _ceil(N, C) * C), dtype=np.int16)

        def finish(key, replies):
            m0, mm, n0, nn = key
            words = self._unpack(MemSpace.OUTPUT, replies)
            out[m0:m0 + mm, n0 * C:(n0 + nn) * C] = \
                words.reshape(nn, mm, C).transpose(1, 0, 2).reshape(mm, nn * C)

        start = self._begin()
        segments = self._gemm_segments(x2, w.T, finish=finish, act=act)
        if tab_bytes is not None and self._tables.get(slot) != tab_bytes:
            self._tables.pop(slot, None)
            self._run([(self._write_mem(MemSpace.TABLE, slot * 256, tab_bytes), None)])
            self._tables[slot] = tab_bytes
        self._run(segments)
        shape = {"m": M, "k": K, "n": N}
        self._end(start, op_name, shape, macs=M * K * N)
        res = out[:, :N]
        if precision == ActivationPrecision.INT8:
            res = res.astype(np.int8)
        return res.reshape(lead + (N,))

    def _linear_float(self, x, w, bias, fn, out_scale):
        from ..sim.activation_model import fixed_output_frac

        x = self._float_array("x", x)
        w = self._float_array("w", w, ndim=2)
        self._check_linear_shapes(x, w)
        N = w.shape[0]
        qmax = self.config.operand_max
        xs = float(np.max(np.abs(x))) / qmax or 1.0
        wmax = np.max(np.abs(w), axis=1).astype(np.float64)
        ws = np.where(wmax > 0, wmax / qmax, 1.0)
        xq = np.clip(np.rint(x / xs), -qmax, qmax).astype(np.int8)
        wq = np.clip(np.rint(w / ws[:, None]), -qmax, qmax).astype(np.int8)
        acc_scale = xs * ws                                     # value of one accumulator unit
        if bias is not None:
            bias = self._float_array("bias", bias, ndim=1)
            if bias.shape != (N,):
                raise ValueError(f"bias must have shape ({N},), got {bias.shape}")
            bq = np.rint(bias / acc_scale)
            if np.any(np.abs(bq) > 2 ** 31 - 1):
                raise ValueError("bias too large for the int32 accumulator scale")
            bq = bq.astype(np.int64)
        else:
            bq = np.zeros(N, dtype=np.int64)
        if fn in (ActivationFunction.NONE, ActivationFunction.RELU):
            if out_scale is None:
                # |x.w| <= |x| |w|: the largest row norm times each column norm bounds
                # every output, so nothing saturates; 8 is the Q4.12 range.
                xn = float(np.max(np.linalg.norm(xq.reshape(-1, xq.shape[-1]).astype(np.float64),
                                                 axis=1)))
                wn = np.linalg.norm(wq.astype(np.float64), axis=1)
                bound = (xn * wn + np.abs(bq)) * acc_scale
                unit = np.where(bound > 0, bound / 7.99, 1.0)
            else:
                unit = np.broadcast_to(np.asarray(out_scale, dtype=np.float64), (N,))
                if np.any(~np.isfinite(unit)) or np.any(unit <= 0):
                    raise ValueError(f"out_scale must be positive and finite, got {out_scale!r}")
        else:
            unit = np.ones(N)
        scale = acc_scale * _Q412 / unit
        codes = self._linear_int(xq, wq, bq, fn, scale=scale, multiplier=None, shift=None,
                                 table=None, table_scales=None,
                                 precision=ActivationPrecision.FIXED16)
        frac = fixed_output_frac(fn)
        res = codes.astype(np.float64) / (1 << frac)
        if fn in (ActivationFunction.NONE, ActivationFunction.RELU):
            res = res * unit
        return res.astype(np.float32)

    def activation(self, kind, x, *, scale=None, multiplier=None, shift=None, bias=0,
                   table=None, table_scales=None, precision=None):
        """The requantisation + activation unit alone, on any shape.

        * float ``x``: evaluated on the device in 16-bit fixed point (``x`` to
          Q4.12, so |x| < 8; sigmoid/tanh return Q1.14), returned as float32.
        * integer ``x`` (accumulator values, int32 range): requantised with
          ``scale`` or ``multiplier``/``shift`` (default 1.0) and ``bias``, then
          the function, returning int8 codes (``precision="int8"``, the default
          for integers; sigmoid/tanh/gelu need ``table`` or ``table_scales``)
          or int16 fixed point (``"fixed16"``).
        """
        from ..sim.activation_model import (INT32_MAX, INT32_MIN, build_table,
                                            fixed_output_frac, quantize_multiplier)

        fn = _activation_kind(kind)
        self._check_open()
        if not self.config.has_activation:
            raise ValueError("this config has no activation unit (has_activation=False)")
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy array, not {type(x).__name__}")
        is_float = x.dtype.kind == "f"
        if is_float:
            x = self._float_array("x", x)
            if np.any(np.abs(x) >= 8.0):
                idx = tuple(int(i) for i in np.argwhere(np.abs(x) >= 8.0)[0])
                raise ValueError(f"x[{', '.join(map(str, idx))}] = {x[idx]} is outside the "
                                 f"Q4.12 range (-8, 8) of the fixed-point path")
            if precision not in (None, "fixed16", ActivationPrecision.FIXED16):
                raise ValueError("float inputs run the fixed16 path")
            acc = np.rint(x.astype(np.float64) * _Q412).astype(np.int64)
            prec = ActivationPrecision.FIXED16
            mult, sh = quantize_multiplier(1.0)
            b = 0
        else:
            if x.dtype.kind not in "iu" or x.dtype == np.bool_:
                raise TypeError(f"x must be a float or integer array, got dtype {x.dtype}")
            if x.size == 0:
                raise ValueError(f"x must not be empty, got shape {x.shape}")
            xmin, xmax = int(x.min()), int(x.max())
            if xmin < INT32_MIN or xmax > INT32_MAX:
                raise ValueError(f"x value {xmin if xmin < INT32_MIN else xmax} outside int32")
            acc = x.astype(np.int64)
            prec = _precision(precision or "int8")
            if scale is not None:
                mult, sh = quantize_multiplier(float(scale))
            elif multiplier is not None or shift is not None:
                if multiplier is None or shift is None:
                    raise ValueError("give both multiplier and shift")
                mult, sh = multiplier, shift
            else:
                mult, sh = quantize_multiplier(1.0)
            b = bias
        cfg = self.config
        C = cfg.cols
        mult = int(self._channel_param("multiplier", mult, 1, 0, 2 ** 31 - 1)[0])
        sh = int(self._channel_param("shift", sh, 1, 0, 63)[0])
        b = int(self._channel_param("bias", b, 1, INT32_MIN, INT32_MAX)[0])
        slot = 0
        tab_bytes = None
        if prec == ActivationPrecision.INT8 and fn in _TABLE_FUNCS:
            if table is None:
                if table_scales is None:
                    raise ValueError(f"{fn.name.lower()} in int8 needs table= or table_scales=")
                table = build_table(fn, *table_scales)
            tab = np.asarray(table)
            if tab.shape != (256,) or tab.dtype.kind not in "iu":
                raise ValueError(f"table must be 256 int8 entries, got shape {tab.shape}")
            tab_bytes = tab.astype(np.int8).tobytes()
            slot = {ActivationFunction.SIGMOID: 0, ActivationFunction.TANH: 1,
                    ActivationFunction.GELU: 2}[fn] % cfg.act_tables
        flat = acc.reshape(-1)
        rows = _ceil(flat.size, C)
        padded = np.zeros(rows * C, dtype=np.int64)
        padded[:flat.size] = flat
        accw = mem_word(cfg, MemSpace.ACC)
        data = padded.reshape(rows, C).astype(accw.dtype)
        half = min(cfg.acc_depth, cfg.output_depth) // 2
        result = np.zeros((rows, C), dtype=np.int16)
        pw = mem_word(cfg, MemSpace.ACT_PARAM)
        params = np.array([[b] * C, [mult] * C, [sh] * C], dtype=np.int64).astype(pw.dtype)
        flags = int(prec) | slot << ACT_TABLE_SHIFT

        def segments():
            yield self._write_mem(MemSpace.ACT_PARAM, 0, params.tobytes()), None
            pending = None
            for i, r0 in enumerate(range(0, rows, half)):
                rr = min(half, rows - r0)
                base = (i % 2) * half
                reqs = self._write_mem(MemSpace.ACC, base, data[r0:r0 + rr].tobytes())
                reqs.append((Opcode.ACTIVATE, encode_instruction(
                    Opcode.ACTIVATE, acc_addr=base, out_addr=base, m=rr, param_entry=0,
                    function=int(fn), flags=flags)))
                yield _with_pending_read(reqs, pending)

                def store(replies, r0=r0, rr=rr):
                    result[r0:r0 + rr] = self._unpack(MemSpace.OUTPUT, replies)

                pending = (self._read_mem(MemSpace.OUTPUT, base, rr), store)
            yield pending

        start = self._begin()
        if tab_bytes is not None and self._tables.get(slot) != tab_bytes:
            self._tables.pop(slot, None)
            self._run([(self._write_mem(MemSpace.TABLE, slot * 256, tab_bytes), None)])
            self._tables[slot] = tab_bytes
        self._run(segments())
        self._end(start, "activation", {"elements": int(flat.size)})
        res = result.reshape(-1)[:flat.size].reshape(x.shape)
        if is_float:
            return (res.astype(np.float64) / (1 << fixed_output_frac(fn))).astype(np.float32)
        if prec == ActivationPrecision.INT8:
            return res.astype(np.int8)
        return res

    def adam_step(self, params, grads, m, v, *, lr, betas=(0.9, 0.999), eps=1e-8,
                  weight_decay=0.0, step, decoupled=False):
        """One Adam (``decoupled=False``, L2 decay as ``torch.optim.Adam``) or
        AdamW (``decoupled=True``, as ``torch.optim.AdamW``) step on the device.

        ``params``, ``grads``, ``m``, ``v`` are float32 arrays of one shape;
        ``params``, ``m`` and ``v`` are updated in place (as torch does) and
        also returned.  ``step`` is the 1-based step number used in the bias
        corrections.  NaN/inf in the tensors propagate as IEEE arithmetic does.
        """
        from ..sim.adam_model import hyperparameters

        self._check_open()
        if not self.config.has_adam:
            raise ValueError("this config has no Adam unit (has_adam=False)")
        arrays = {"params": params, "grads": grads, "m": m, "v": v}
        for name, arr in arrays.items():
            if not isinstance(arr, np.ndarray):
                raise TypeError(f"{name} must be a numpy float32 array, not {type(arr).__name__}")
            if arr.dtype != np.float32:
                raise TypeError(f"{name} must have dtype float32, got {arr.dtype}")
            if arr.shape != params.shape:
                raise ValueError(f"{name} has shape {arr.shape}, params has {params.shape}")
        if params.size == 0:
            raise ValueError("params must not be empty")
        for name in ("params", "m", "v"):
            if not arrays[name].flags.writeable:
                raise ValueError(f"{name} must be writeable: it is updated in place")
        hp = hyperparameters(lr, betas, eps, weight_decay, step, decoupled)
        cfg = self.config
        L = cfg.adam_lanes
        n = params.size
        words = _ceil(n, L)
        state = np.zeros((words * L, 4), dtype=np.float32)
        for i, name in enumerate(("params", "grads", "m", "v")):
            state[:n, i] = arrays[name].reshape(-1)
        state = state.reshape(words, L, 4)
        depth = mem_depth(cfg, MemSpace.OPT)
        half = max(1, depth // 2)
        result = np.zeros_like(state)
        regs = [{"reg": self.regs[f"ADAM_{k.upper()}"], "value": hp[k]}
                for k in ADAM_HYPERPARAMETERS]
        regs.append({"reg": self.regs["ADAM_MODE"], "value": hp["mode"]})

        def segments():
            yield [(Opcode.WRITE_REG, encode_instruction(Opcode.WRITE_REG, *regs))], None
            pending = None
            for i, w0 in enumerate(range(0, words, half)):
                ww = min(half, words - w0)
                base = (i % 2) * half
                reqs = self._write_mem(MemSpace.OPT, base, state[w0:w0 + ww].tobytes())
                reqs.append((Opcode.ADAM, encode_instruction(Opcode.ADAM, addr=base, count=ww)))
                yield _with_pending_read(reqs, pending)

                def store(replies, w0=w0, ww=ww):
                    result[w0:w0 + ww] = np.frombuffer(b"".join(replies), dtype="<f4") \
                        .reshape(ww, L, 4)

                pending = (self._read_mem(MemSpace.OPT, base, ww), store)
            yield pending

        start = self._begin()
        self._run(segments())
        self._end(start, "adam_step", {"params": int(n)})
        flat = result.reshape(-1, 4)[:n]
        for i, name in ((0, "params"), (2, "m"), (3, "v")):
            arrays[name][...] = flat[:, i].reshape(params.shape)
        return params, m, v


class _ActPlan:
    """ACTIVATE parameters of one linear: per-group ACT_PARAM loads and passes."""

    def __init__(self, acc: Accelerator, fn, precision, bias, mult, shift, slot):
        cfg = acc.config
        self.acc = acc
        self.fn = fn
        self.flags = int(precision) | slot << ACT_TABLE_SHIFT
        C = cfg.cols
        N = bias.shape[0]
        NT = _ceil(N, C)
        pw = mem_word(cfg, MemSpace.ACT_PARAM)
        p = np.zeros((NT, 3, C), dtype=np.int64)
        for i, arr in enumerate((bias, mult, shift)):
            full = np.zeros(NT * C, dtype=np.int64)
            full[:N] = arr
            p[:, i, :] = full.reshape(NT, C)
        self.words = p.astype(pw.dtype)
        self.half = max(1, cfg.act_param_depth // 2)

    def params(self, group: int, n0: int, nn: int) -> list:
        base = (group % 2) * self.half
        return self.acc._write_mem(MemSpace.ACT_PARAM, base, self.words[n0:n0 + nn].tobytes())

    def activates(self, group: int, region: int, obase: int, mm: int, nn: int) -> list:
        base = (group % 2) * self.half
        return [(Opcode.ACTIVATE, encode_instruction(
            Opcode.ACTIVATE, acc_addr=region + j * mm, out_addr=obase + j * mm, m=mm,
            param_entry=base + j, function=int(self.fn), flags=self.flags))
            for j in range(nn)]

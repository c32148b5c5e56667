"""The host runtime: one Python API over the emulator, the RTL simulation and boards.

::

    from hetaccel.host import Accelerator
    with Accelerator.open("emu") as acc:              # or "rtl", or "serial:/dev/ttyUSB1@3000000"
        c = acc.matmul(a_int8, b_int8)                # int32, exact
        y = acc.linear(x, w, bias, activation="gelu") # float in -> float out (quantized on device)
        print(acc.profile.report())

Every backend runs the same code below: operations become instruction frames
(:mod:`hetaccel.spec` layouts, :mod:`hetaccel.spec.link` framing) and only
the :class:`~hetaccel.host.transport.Transport` differs.  The planner
(:mod:`hetaccel.host.planner`) decides the schedule of every operation -- which
words go where, which instructions run, what is read back -- and counts what it
costs; this module attaches the data and the link session
(:mod:`hetaccel.host.session`) carries the frames.

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

Emulator.  On the ``emu`` backend the frames need not be bytes: the device
model's bulk methods (:mod:`hetaccel.sim.device_model`) take whole loads,
read-backs and grids of GEMMs and ACTIVATEs with exactly the effect of their
frames, and a GEMM plan's products come from one exact matrix product of the
operands (the words its loads write; resident weights' words read from the
device memory its LOADs fetch from), so an operation costs about what NumPy
costs for it.  What a schedule's frames count depends on the frames alone,
never on the words they carry: a GEMM plan or an activation schedule run
before is replayed, its words moved and its first run's counts counted
again.  Results, counters, cycles, scratchpads, device memory and the
session's counts are those of the frames (tests/test_emulator_fast.py);
``EmuTransport(config, bulk=False)`` sends every frame through the byte-level
link instead.
"""

from __future__ import annotations

import itertools
import struct
import time
from functools import lru_cache

import numpy as np

from ..sim.activation_model import build_table, fixed_output_frac, quantize_multiplier
from ..sim.adam_model import hyperparameters
from ..sim.device_model import exact_product
from ..spec import (ACT_TABLE_SHIFT, ADAM_HYPERPARAMETERS, DEFAULT_CONFIG, INSTRUCTIONS,
                    INT32_MAX, INT32_MIN, MULTIPLIER_MAX, SHIFT_MAX, AcceleratorConfig,
                    ActivationFunction, ActivationPrecision, MemSpace, Opcode,
                    config_from_identity, encode_instruction, identity_words, mem_depth,
                    mem_word, register_map)
from .planner import (GemmGroup, Instr, Load, Read, RegRead, RegWrite, Segment,
                      activation_segments, adam_segments, board_image, plan_device_gemm,
                      profile_counters, read_chunks, resident_weight_bytes, table_segment,
                      upload_segments, write_chunks)
from .profiler import OpRecord, Profile
from .rtl_transport import RtlTransport
from .session import (AcceleratorError, DeviceResetError, DeviceStatusError, LinkError,
                      Session)
from .tensors import DeviceMemoryAllocator, DeviceMemoryFull, DeviceTensor
from .transport import EmuTransport, FaultyTransport, SerialTransport, Transport, parse_serial_url

__all__ = ["Accelerator", "AcceleratorError", "LinkError", "DeviceStatusError",
           "DeviceResetError", "DeviceTensor", "DeviceMemoryFull"]


# ---------------------------------------------------------------------------
# the emulator's bulk path: the operands of a GEMM plan's groups


def _magnitude(x: np.ndarray) -> int:
    """The largest ``|x|`` (``np.abs`` of an int8 -128 is -128)."""
    return max(-int(x.min()), int(x.max())) if x.size else 0


class _Operands:
    """The zero-padded operands of one GEMM op, converted once to the dtype in
    which BLAS multiplies them exactly (:func:`~hetaccel.sim.device_model.exact_product`).

    The GEMMs of a segment read INPUT and WEIGHT words that its Loads (or, for
    a row block's resident activations, the block's first segment) wrote from
    exactly these tiles, so their products are taken from here instead of
    being read back from the scratchpads.
    """

    def __init__(self, cfg: AcceleratorConfig, ap: np.ndarray, bp: np.ndarray):
        self.R, self.C = cfg.rows, cfg.cols
        self.bound = _magnitude(ap) * _magnitude(bp)
        k = ap.shape[1]
        if k * self.bound >= 1 << 53:
            dt = np.int64
        elif self.bound == 0 or ((1 << 24) - 1) // self.bound >= 64:
            dt = np.float32
        else:
            dt = np.float64
        self.a = ap.astype(dt)
        self.b = bp.astype(dt)
        self._full = None

    def full(self) -> np.ndarray:
        """A times B (exact, int64), once for every segment of the op."""
        if self._full is None:
            self._full = exact_product(self.a, self.b, self.bound)
        return self._full

    def within(self, bits: int) -> bool:
        """Whether every sum of products fits ``bits``-bit two's complement
        (so the device's accumulators hold it unwrapped)."""
        return self.a.shape[1] * self.bound < 1 << (bits - 1)

    def product(self, m0: int, mm: int, t0: int, t1: int, n0: int, nn: int) -> np.ndarray:
        """Rows ``m0 ..`` of A times column tiles ``n0 ..`` of B over K-tiles
        ``t0 .. t1-1`` (exact, int64)."""
        R, C = self.R, self.C
        if t0 == 0 and t1 * R == self.a.shape[1]:
            # a whole reduction: a slice of the product of the whole operands
            return self.full()[m0:m0 + mm, n0 * C:(n0 + nn) * C]
        return exact_product(self.a[m0:m0 + mm, t0 * R:t1 * R],
                             self.b[t0 * R:t1 * R, n0 * C:(n0 + nn) * C], self.bound)


def _load_extent(payload: bytes) -> tuple:
    """``(space, addr, words)`` a LOAD's payload writes."""
    space, addr, _, count = _packer(Opcode.LOAD).unpack(payload)
    return space, addr, count


class _Deferred:
    """INPUT/WEIGHT Loads whose words matter only to what the scratchpads hold
    after the op (its GEMMs take their operands from :class:`_Operands`): a
    Load every word of which a later one rewrites is dropped as it comes."""

    def __init__(self):
        self._by_start: dict = {}
        self._seq = 0

    def add(self, load: Load) -> None:
        key = (load.space, load.addr)
        kept = [e for e in self._by_start.get(key, ()) if e[1].words > load.words]
        kept.append((self._seq, load))
        self._by_start[key] = kept
        self._seq += 1

    def pop_all(self) -> list:
        """The surviving Loads, in the order they came."""
        out = sorted((e for es in self._by_start.values() for e in es), key=lambda e: e[0])
        self._by_start.clear()
        return [load for _, load in out]


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


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


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
        self.link = Session(transport, probe_config, timeout=float(timeout), retries=retries)
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
        self.profile = Profile(self.backend, board_image(board, config))
        self._tables: dict[int, bytes] = {}
        self._counter_names = profile_counters(config)
        mem = config.memory
        self._memory = DeviceMemoryAllocator(mem.bytes, mem.line_bytes) if mem else None
        self._resident: dict[int, DeviceTensor] = {}
        self._chunk_cache: dict = {}
        self._plans: dict = {}
        self._group_checks: dict = {}
        self._replays: dict = {}
        self._words: dict = {}

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
            ``"serial:PORT[@BAUD]"`` (a board; e.g. ``"serial:/dev/ttyUSB1@3000000"``;
            without ``@BAUD`` the link runs at ``config``'s baud, else at the
            ``board`` image's, else at the default config's).
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
            Board image the profiler projects each operation onto, planned on
            that image's own config (:func:`~hetaccel.host.planner.board_images`;
            default ``"config"``: this session's config).
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
            # the image the board was built from sets its UART's baud
            image = config or board_image(board, None).config
            transport = SerialTransport(port, baud or image.baud, **transport_options)
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
        values = self.link.read_regs([self.regs[n] for n in self._counter_names])
        return dict(zip(self._counter_names, values))

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this Accelerator is closed")

    # --- operation bookkeeping -----------------------------------------------

    def _begin(self):
        self._check_open()
        link = self.link
        return (time.perf_counter(), self._counters(), link.bytes_sent, link.bytes_received,
                link.frames_sent, link.retry_count, len(link.fault_log))

    def _end(self, start, op: str, shape: dict, macs: int = 0, table: bool = False,
             resident: bool = False) -> OpRecord:
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
            board=self.profile.board, counters=d, table_load=table, resident=resident,
            dma_cycles=d.get("DMA_BUSY", 0),
            dram_bytes=d.get("DMA_BYTES_IN", 0) + d.get("DMA_BYTES_OUT", 0))
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
            # a reset re-initialises the device memory: nothing in it is
            # trusted any more, and using a lost tensor says so
            for t in self._resident.values():
                t.freed = t.lost = True
            self._resident.clear()
            if self._memory is not None:
                self._memory = DeviceMemoryAllocator(self._memory.capacity, self._memory.align)
            try:
                self.link.baseline(self.regs["FRAMES"])
            except AcceleratorError:
                pass

    # --- request helpers -------------------------------------------------------

    def _write_mem(self, space: MemSpace, addr: int, data, words: int) -> list:
        if isinstance(data, np.ndarray):        # a part of a GEMM's operands
            data = data.tobytes()
        wb = self._word(space).bytes
        if len(data) != words * wb:
            raise RuntimeError(f"the schedule loads {words} words of {space.name} but the data "
                               f"holds {len(data)} bytes")  # pragma: no cover - internal
        reqs = []
        at = 0
        for w in write_chunks(self.config, space, words):
            reqs.append((Opcode.WRITE_MEM, encode_instruction(
                Opcode.WRITE_MEM, space=int(space), addr=addr + at,
                data=data[at * wb:(at + w) * wb])))
            at += w
        return reqs

    def _read_mem(self, space: MemSpace, addr: int, count: int) -> list:
        reqs = []
        at = 0
        for w in read_chunks(self.config, space, count):
            reqs.append((Opcode.READ_MEM, encode_instruction(Opcode.READ_MEM, space=int(space),
                                                             addr=addr + at, count=w)))
            at += w
        return reqs

    def _requests(self, steps, part, regs=None) -> list:
        """The request frames ``(opcode, payload)`` of a planner segment's steps.

        ``part(key)`` returns the bytes of a :class:`~hetaccel.host.planner.Load`'s
        part (or an array of its words); ``regs`` maps the register names of a
        RegWrite to their values.
        """
        reqs = []
        for s in steps:
            kind = type(s)
            if kind is Instr:
                reqs.append((s.opcode, _packer(s.opcode).pack(*s.fields)))
            elif kind is Load:
                reqs += self._write_mem(s.space, s.addr, part(s.part), s.words)
            elif kind is RegWrite:
                reqs.append((Opcode.WRITE_REG, encode_instruction(
                    Opcode.WRITE_REG, *({"reg": self.regs[r], "value": regs[r]} for r in s.regs))))
            elif kind is RegRead:
                reqs.append((Opcode.READ_REG, encode_instruction(
                    Opcode.READ_REG, *({"reg": self.regs[r]} for r in s.regs))))
            else:  # pragma: no cover - the planner makes only these
                raise TypeError(f"not a schedule step: {s!r}")
        return reqs

    def _schedule(self, segments, part, finish=None, regs=None, pending=None):
        """Runnable ``(requests, on_replies)`` pairs of planner segments: each
        segment's steps carry the previous segment's read-back, whose replies go
        to ``finish(key, replies)``.  ``pending``: ``(Read, key)`` of an earlier
        segment whose read-back is still to go."""
        if pending is not None:
            r, key = pending
            pending = (self._read_mem(r.space, r.addr, r.words),
                       lambda replies, key=key: finish(key, replies))
        for seg in segments:
            yield _with_pending_read(self._requests(seg.steps, part, regs), pending)
            pending = None
            if seg.read is not None:
                r = seg.read
                pending = (self._read_mem(r.space, r.addr, r.words),
                           lambda replies, key=seg.key: finish(key, replies))
        if pending is not None:
            yield pending

    def _run_planned(self, segments, part, finish=None, regs=None) -> None:
        """Run planner segments: as frames over the link, or straight into an
        emulated device (:meth:`_run_bulk`)."""
        dev = self.link.bulk_device
        if dev is None:
            self._run(self._schedule(segments, part, finish, regs))
        else:
            self._run_bulk(dev, segments, part, finish, regs)

    # The emulator's bulk path: a segment's frames go to the device model's bulk
    # methods, which have exactly their effect, in the order the link would
    # carry them (a segment's steps, then the previous segment's read-back), and
    # the session counts them as sent and acknowledged.  A segment holding a
    # frame the device would refuse, and everything after it, goes over the
    # link as frames instead, which answers it as the device does.

    def _chunks(self, space: MemSpace, words: int, read: bool = False) -> tuple:
        key = (space, words, read)
        c = self._chunk_cache.get(key)
        if c is None:
            c = self._chunk_cache[key] = tuple(
                (read_chunks if read else write_chunks)(self.config, space, words))
        return c

    def _fall_back(self, dev, since, rest, part, finish, regs, pending) -> None:
        self.link.bulk_account(dev, since)
        self._run(self._schedule(rest, part, finish, regs, pending))

    def _run_bulk(self, dev, segments, part, finish=None, regs=None, activate=None) -> bool:
        """Planner segments on the bulk path; whether all of them took it.
        ``activate(fields)``, when given, runs each ACTIVATE instead."""
        since = list(dev.bulk_traffic)
        pending = None
        segments = iter(segments)
        try:
            for seg in segments:
                if not self._bulk_ok(dev, seg, regs):
                    self._fall_back(dev, since, itertools.chain([seg], segments), part, finish,
                                    regs, pending)
                    return False
                for s in seg.steps:
                    if type(s) is Load:
                        dev.bulk_write(s.space, s.addr, part(s.part), self._chunks(s.space, s.words))
                    elif activate is not None and type(s) is Instr \
                            and s.opcode == Opcode.ACTIVATE:
                        activate(s.fields)
                    else:
                        for op, payload in self._requests((s,), part, regs):
                            dev.bulk_request(op, payload)
                if pending is not None:
                    self._bulk_read(dev, pending, finish)
                pending = None if seg.read is None else (seg.read, seg.key)
            if pending is not None:
                self._bulk_read(dev, pending, finish)
        finally:
            self.link.bulk_account(dev, since)
        return True

    def _run_activation_bulk(self, dev, key: tuple, segments: list, part, finish,
                             result: np.ndarray) -> None:
        """The activation unit's passes (:func:`~hetaccel.host.planner.activation_segments`)
        on the bulk path.  When every pass loads ACC rows and activates just
        those into OUTPUT with one parameter entry (the unit works element by
        element), all the rows are activated at once: on the first run of a
        schedule, as its first ACTIVATE comes, each pass's then writing its
        own rows of them; the first run goes segment by segment and measures
        what the device counted.  A later run of it stores what the passes
        leave in ACC and OUTPUT and counts what the first run counted (it
        depends on the frames alone)."""
        replay = self._replays.get(key)
        if replay is not None:
            params, acc_loads, outputs, entry, function, flags, counts = replay
            since = list(dev.bulk_traffic)
            try:
                dev.write_array(params.space, params.addr, part(params.part), params.words)
                out = self._activate_all(dev, part, result.shape[0], entry, function, flags)
                self._store(dev, acc_loads, part)
                for base, r0, rr in outputs:
                    dev.write_array(MemSpace.OUTPUT, base, out[r0:r0 + rr], rr)
                dev.add_counts(counts)
                result[...] = out
            finally:
                self.link.bulk_account(dev, since)
            return
        pattern = self._activation_passes(segments, result.shape[0])
        if pattern is None:
            self._run_bulk(dev, segments, part, finish)
            return
        entry, function, flags = pattern
        done: list = []      # the values, and the rows the passes so far activated

        def activate(fields):
            acc_addr, out_addr, m = fields[:3]
            if not done:
                done[:] = [self._activate_all(dev, part, result.shape[0], entry, function,
                                              flags), 0]
            out, r0 = done
            dev.bulk_activate(acc_addr, out_addr, m, entry, 1, function, flags,
                              values=out[r0:r0 + m])
            done[1] = r0 + m

        before = dev.bulk_counts()
        if not self._run_bulk(dev, segments, part, finish, activate=activate):
            return
        passes = segments[1:]
        if len(self._replays) > 1024:
            self._replays.clear()
        outputs = self._last_writers([(s.read.addr, s.key[0], s.read.words) for s in passes],
                                     lambda o: (MemSpace.OUTPUT, o[0], o[2]))
        self._replays[key] = (segments[0].steps[0],
                              tuple(self._lasting([s.steps[0] for s in passes])),
                              tuple(outputs), entry, function, flags,
                              dev.counts_since(before))

    @staticmethod
    def _activate_all(dev, part, rows: int, entry: int, function: int, flags: int):
        """The OUTPUT words of ACC rows ``0 .. rows-1`` of the data (``part``)."""
        acc = dev.decode_words(MemSpace.ACC, part(("acc", 0, rows)))
        return dev.activate_values(acc, entry, function, flags)

    @staticmethod
    def _activation_passes(segments: list, rows: int) -> tuple | None:
        """``(entry, function, flags)`` when ``segments`` are a parameter load,
        then passes that each load ACC rows and activate just those into
        OUTPUT, with one parameter entry, covering ``rows`` rows once, in
        order; else None."""
        first, passes = segments[0], segments[1:]
        if not (len(first.steps) == 1 and first.steps[0].space == MemSpace.ACT_PARAM
                and first.read is None and passes):
            return None
        entry = function = flags = None
        done = 0
        for seg in passes:
            ld, act = seg.steps if len(seg.steps) == 2 else (None, None)
            if not (type(ld) is Load and ld.space == MemSpace.ACC and type(act) is Instr
                    and act.opcode == Opcode.ACTIVATE):
                return None
            acc_addr, out_addr, m, e, fn, fl = act.fields
            if ((acc_addr, m) != (ld.addr, ld.words) or ld.part != ("acc", done, m)
                    or seg.read != Read(MemSpace.OUTPUT, out_addr, m) or seg.key != (done, m)
                    or (entry, function, flags) not in ((None, None, None), (e, fn, fl))):
                return None
            entry, function, flags = e, fn, fl
            done += m
        return (entry, function, flags) if done == rows else None

    def _bulk_ok(self, dev, seg: Segment, regs) -> bool:
        """Whether the device answers every frame of ``seg`` (its read-back
        included) OK; the checks depend on the frames alone, not on state."""
        for s in seg.steps:
            if type(s) is Load:
                ok = dev.write_ok(s.space, s.addr, self._chunks(s.space, s.words))
            else:
                ok = all(dev.request_ok(op, payload)
                         for op, payload in self._requests((s,), None, regs))
            if not ok:
                return False
        r = seg.read
        return r is None or dev.read_ok(r.space, r.addr, self._chunks(r.space, r.words, True))

    def _bulk_read(self, dev, pending, finish) -> None:
        r, key = pending
        data = dev.bulk_read(r.space, r.addr, self._chunks(r.space, r.words, True))
        if finish is not None:
            finish(key, [data])

    def _run_gemm_bulk(self, dev, plan, fields: tuple, part, finish, operands: _Operands,
                       whole=None) -> None:
        """A GEMM plan's groups (:meth:`~hetaccel.host.planner.DeviceGemmPlan.groups`)
        on the bulk path.

        A group's GEMMs all add into its ACC region, the first overwriting
        it, over K-tiles ``0 .. KT-1`` between them: their effect is that
        region set to the group's product, taken from ``operands``.  So the
        INPUT and WEIGHT words only matter to what the scratchpads hold after
        the op: only Loads some word of which no later one rewrites are
        stored, at the end (:class:`_Deferred`).  Resident weights' LOADs are
        counted as they come and only those some word of which no later one
        rewrites run, at the end (their words come from device memory, which
        no step of a GEMM plan writes; their counts are counted apart:
        :meth:`~hetaccel.sim.device_model.DeviceModel.bulk_load_count`).

        Which frames a plan sends, and so everything they count, depends on
        the plan and the ACTIVATE fields alone, never on the words: the first
        run of a plan goes group by group and measures what the device
        counted (:meth:`~hetaccel.sim.device_model.DeviceModel.counts_since`);
        a later run of it only moves the words (:meth:`_replay_gemm`) and
        counts that again.
        """
        key = (plan, fields)
        replay = self._replays.get(key)
        if replay is not None:
            self._replay_gemm(dev, plan, replay, part, finish, operands, whole)
            return
        before = dev.bulk_counts()
        since = list(dev.bulk_traffic)
        deferred = _Deferred()
        pending = None
        done: list = []
        groups = iter(plan.groups(*fields))
        try:
            for g in groups:
                checked = self._group_kinds(dev, g)
                if checked is None:
                    self._store(dev, self._lasting(deferred.pop_all()), part)
                    rest = (x.segment() for x in itertools.chain([g], groups))
                    self._fall_back(dev, since, rest, part, finish, None, pending)
                    return
                self._bulk_group(dev, g, checked, part, operands, deferred)
                done.append((g, checked[1]))
                if pending is not None:
                    self._bulk_read(dev, pending, finish)
                pending = (g.read, g.key)
            if pending is not None:
                self._bulk_read(dev, pending, finish)
            lasting = self._lasting(deferred.pop_all())
            self._store(dev, lasting, part)
            loads = tuple(self._last_writers([p for _, run in done for p in run],
                                             _load_extent))
            for payload in loads:
                dev.load_words(payload)
        finally:
            self.link.bulk_account(dev, since)
        if len(self._replays) > 1024:
            self._replays.clear()
        # the groups some ACC row of which no later group rewrites
        acc_lasting = self._last_writers([g for g, _ in done],
                                         lambda g: (MemSpace.ACC, g.region, g.nn * g.mm))
        self._replays[key] = (tuple(g for g, _ in done), tuple(lasting),
                              dev.counts_since(before), tuple(acc_lasting), loads)

    def _replay_gemm(self, dev, plan, replay: tuple, part, finish, operands: _Operands,
                     whole) -> None:
        """A plan's groups again: the words they move in the order the frames
        move them (what no later step rewrites but for the loads of INPUT and
        WEIGHT, whose lasting words come last, as on the first run), then
        the counts of the first run.  A matmul's results go to ``whole`` at
        once when given, and only its groups' ACC rows that no later group
        rewrites are stored."""
        groups, lasting, counts, acc_lasting, loads = replay
        since = list(dev.bulk_traffic)
        pending = None
        try:
            for payload in loads:
                dev.load_words(payload)
            if whole is not None and not plan.linear:
                values = operands.full()
                if not operands.within(self.config.acc_bits):
                    values = dev.acc_values(values)
                C = self.config.cols
                for g in acc_lasting:
                    dev.gemm_sum_words(g.region, g.mm, g.nn,
                                       values[g.m0:g.m0 + g.mm, g.n0 * C:(g.n0 + g.nn) * C],
                                       False)
                self._store(dev, lasting, part)
                dev.add_counts(counts)
                whole(values)
                return
            for g in groups:
                if g.params is not None:
                    ld = g.params
                    dev.write_array(ld.space, ld.addr, part(ld.part), ld.words)
                product = operands.product(g.m0, g.mm, 0, g.plan.KT, g.n0, g.nn)
                dev.gemm_sum_words(g.region, g.mm, g.nn, product, False)
                act = g.act_grid()
                if act is not None:
                    dev.activate_words(*act)
                if pending is not None:
                    r, key = pending
                    finish(key, [dev.read_words(r.space, r.addr, r.words)])
                pending = (g.read, g.key)
            r, key = pending
            finish(key, [dev.read_words(r.space, r.addr, r.words)])
            self._store(dev, lasting, part)
            dev.add_counts(counts)
        finally:
            self.link.bulk_account(dev, since)

    def _group_kinds(self, dev, g: GemmGroup) -> tuple | None:
        """``(writes, loads, lasting)`` of a group, or None when the device
        would refuse a frame of ``g``.  ``writes``: ``(space, addr, chunks,
        times)`` of the weights' and activations' WRITE_MEMs of each kind of
        chunk (:meth:`~hetaccel.host.planner.GemmGroup.chunk_kinds`: chunks
        of one kind send the same frames but for their data and their LOADs'
        device-memory addresses); ``loads`` the payloads of the LOADs of
        resident weights; ``lasting``: ``(part kind, space, addr, words, t0,
        tt)`` of the Loads of the chunks whose words may outlast the group
        (:meth:`~hetaccel.host.planner.GemmGroup.lasting_chunks`), their parts
        that group's rows or columns of K-tiles ``t0 ..``."""
        # the checks depend on where the frames go, not on the rows they carry
        p = g.plan
        sig = (p.KT, p.NT, p.kc, p.resident, p.weights_at, g.mm, g.nn, g.region,
               g.chunk0 % 2, g.a_base, g.a_load and g.a_load[:3], g.params and g.params[:3],
               g.act_grid(), g.read, g.n0 if p.weights_at is not None else None)
        try:
            return self._group_checks[sig]
        except KeyError:
            pass
        if len(self._group_checks) > 4096:
            self._group_checks.clear()
        checked = self._group_checks[sig] = self._check_group(dev, g)
        return checked

    def _check_group(self, dev, g: GemmGroup) -> tuple | None:
        kinds = g.chunk_kinds()
        for ld in (g.a_load, g.params):
            if ld is not None and not dev.write_ok(ld.space, ld.addr,
                                                   self._chunks(ld.space, ld.words)):
                return None
        resident_weights = g.plan.weights_at is not None
        for c, _ in kinds:
            a = g.input_load(c)
            if not resident_weights:
                (w,) = g.weight_steps(c)
                if not dev.write_ok(w.space, w.addr, self._chunks(w.space, w.words)):
                    return None
            if a is not None and not dev.write_ok(a.space, a.addr, self._chunks(a.space, a.words)):
                return None
            if not dev.gemm_ok(*g.grid(c)):
                return None
        loads: list = []
        if resident_weights:
            for i in range(g.n_chunks):
                reqs = self._requests(g.weight_steps(g.chunk(i)), None)
                if not all(dev.request_ok(op, payload) for op, payload in reqs):
                    return None
                loads += (payload for _, payload in reqs)
        act = g.act_grid()
        if act is not None and not dev.activate_ok(*act):
            return None
        r = g.read
        if not dev.read_ok(r.space, r.addr, self._chunks(r.space, r.words, True)):
            return None
        writes = []
        for c, n in kinds:
            for ld in (*(() if resident_weights else g.weight_steps(c)), g.input_load(c)):
                if ld is not None:
                    writes.append((ld.space, ld.addr, self._chunks(ld.space, ld.words), n))
        lasting = []
        for i in g.lasting_chunks():
            c = g.chunk(i)
            for ld in (*(() if resident_weights else g.weight_steps(c)), g.input_load(c)):
                if ld is not None:
                    lasting.append((ld.part[0], ld.space, ld.addr, ld.words, c.t0, c.tt))
        return tuple(writes), tuple(loads), tuple(lasting)

    def _bulk_group(self, dev, g: GemmGroup, checked: tuple, part, operands: _Operands,
                    deferred: _Deferred) -> None:
        writes, loads, lasting = checked
        if g.a_load is not None:
            ld = g.a_load
            dev.bulk_write(ld.space, ld.addr, None, self._chunks(ld.space, ld.words))
            deferred.add(ld)
        if g.params is not None:
            ld = g.params
            dev.bulk_write(ld.space, ld.addr, part(ld.part), self._chunks(ld.space, ld.words))
        for space, addr, chunks, n in writes:
            dev.bulk_write(space, addr, None, chunks, n)
        if loads:
            dev.bulk_load_count(loads)
        for kind, space, addr, words, t0, tt in lasting:
            deferred.add(Load(space, addr, words, (kind, t0, tt, g.n0, g.nn) if kind == "w"
                              else (kind, t0, tt, g.m0, g.mm)))
        # the chunks cover K-tiles 0 .. KT-1, the first overwriting the region
        product = operands.product(g.m0, g.mm, 0, g.plan.KT, g.n0, g.nn)
        dev.bulk_gemm_sum(g.region, g.mm, g.nn, g.plan.KT * g.nn, product, False)
        act = g.act_grid()
        if act is not None:
            dev.bulk_activate(*act)

    def _lasting(self, loads: list) -> list:
        """The Loads of ``loads`` (in order) some word of which no later one
        rewrites, in order: storing them leaves what all of them leave."""
        return self._last_writers(loads, lambda ld: (ld.space, ld.addr, ld.words))

    def _last_writers(self, items: list, extent) -> list:
        """The items (in order) some word of which no later item writes again,
        in order; ``extent(item)`` is the ``(space, addr, words)`` it writes."""
        keep = []
        covered: dict = {}
        for item in reversed(items):
            space, addr, words = extent(item)
            mask = covered.get(space)
            if mask is None:
                mask = covered[space] = np.zeros(mem_depth(self.config, space), bool)
            if not mask[addr:addr + words].all():
                keep.append(item)
                mask[addr:addr + words] = True
        return keep[::-1]

    @staticmethod
    def _store(dev, loads, part) -> None:
        for ld in loads:
            dev.write_array(ld.space, ld.addr, part(ld.part), ld.words)

    def _load_table(self, slot: int, tab_bytes: bytes) -> bool:
        """Load an activation table unless the slot holds it; whether it loaded."""
        if self._tables.get(slot) == tab_bytes:
            return False
        self._tables.pop(slot, None)
        self._run_planned([table_segment(self.config, slot)], lambda part: tab_bytes)
        self._tables[slot] = tab_bytes
        return True

    def _word(self, space: MemSpace):
        """:func:`~hetaccel.spec.mem_word` of ``space`` on this config."""
        word = self._words.get(space)
        if word is None:
            word = self._words[space] = mem_word(self.config, space)
        return word

    def _unpack(self, space: MemSpace, replies: list) -> np.ndarray:
        word = self._word(space)
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

    def _weight_tiles(self, b: np.ndarray) -> np.ndarray:
        """``b`` zero-padded to whole tiles, as ``(KT, NT, rows, cols)``: WEIGHT
        tile ``(t, j)`` is rows ``t*rows ..`` of column tile ``j``, and the
        array's bytes in this order are the resident layout
        (:func:`~hetaccel.host.planner.resident_weight_bytes`)."""
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        K, N = b.shape
        KT, NT = _ceil(K, R), _ceil(N, C)
        bp = np.zeros((KT * R, NT * C), dtype=self._word(MemSpace.WEIGHT).dtype)
        bp[:K, :N] = b
        return bp.reshape(KT, R, NT, C).transpose(0, 2, 1, 3)

    def _run_gemm(self, a: np.ndarray, b, *, finish, act=None, whole=None) -> None:
        """Compute ``a @ b`` group by group, as
        :func:`~hetaccel.host.planner.plan_device_gemm` plans it.

        ``b`` is an array, or a :class:`DeviceTensor` whose tiles the device
        fetches itself.  ``finish(key, replies)`` consumes a group's result
        words: ACC rows for a matmul, OUTPUT rows when ``act`` (the ACTIVATE
        parameters) is given.  ``whole(values)``, for a matmul, may take every
        group's ACC words at once instead (the ``M x NT*cols`` values they
        hold, as int64), when the emulator has them so.
        """
        cfg = self.config
        R = cfg.rows
        M, K = a.shape
        resident = isinstance(b, DeviceTensor)
        N = b.operand_shape[1] if resident else b.shape[1]
        key = (M, K, N, act is not None, b.addr if resident else None)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 4096:
                self._plans.clear()
            plan = self._plans[key] = plan_device_gemm(cfg, M, K, N, linear=act is not None,
                                                       weights_at=b.addr if resident else None)
        KT, NT = plan.KT, plan.NT
        in_dt = self._word(MemSpace.INPUT).dtype
        # Zero padding to whole tiles; the pad rows/columns contribute nothing.
        ap = np.zeros((M, KT * R), dtype=in_dt)
        ap[:, :K] = a
        # INPUT word (k-tile t, row r) = A[r, t*R:(t+1)*R]
        a_tiles = ap.reshape(M, KT, R).transpose(1, 0, 2)             # (KT, M, R)
        b_tiles = None if resident else self._weight_tiles(b)         # (KT, NT, R, C)

        def part(p):
            # the words as arrays: the device model stores them as they are,
            # the frames carry their bytes
            if p[0] == "a":
                _, t0, tt, m0, mm = p
                return np.ascontiguousarray(a_tiles[t0:t0 + tt, m0:m0 + mm])
            if p[0] == "w":
                _, t0, tt, n0, nn = p
                return np.ascontiguousarray(b_tiles[t0:t0 + tt, n0:n0 + nn])
            _, n0, nn = p
            return act.words[n0:n0 + nn].tobytes()

        fields = (int(act.fn), act.flags) if act is not None else ()
        dev = self.link.bulk_device
        if dev is None:
            self._run(self._schedule(plan.segments(*fields), part, finish))
            return
        if resident:
            # the words its LOADs will fetch: no step of the op writes device memory
            b_tiles = dev.dram_words(MemSpace.WEIGHT, b.addr, KT * NT * R).reshape(
                KT, NT, R, cfg.cols)
        bp = b_tiles.transpose(0, 2, 1, 3).reshape(KT * R, NT * cfg.cols)
        self._run_gemm_bulk(dev, plan, fields, part, finish, _Operands(cfg, ap, bp), whole)

    # --- operations ---------------------------------------------------------------

    def matmul(self, a, b) -> np.ndarray:
        """``a @ b`` for integer operands of the config's width: exact, int32.

        Parameters
        ----------
        a : (M, K) int8 array
        b : (K, N) int8 array, or a :class:`DeviceTensor` uploaded from one
            (:meth:`upload`): its tiles then come from device memory.

        Returns
        -------
        (M, N) int32 array (int64 if the config's accumulators are wider than 32 bits).
        """
        a = self._int_operand("a", a)
        if isinstance(b, DeviceTensor):
            self._resident_operand("b", b, "matmul")
        else:
            b = self._int_operand("b", b)
        if a.shape[1] != b.shape[0]:
            raise ValueError(f"inner dimensions differ: a is {a.shape}, b is {tuple(b.shape)}")
        M, K = a.shape
        N = b.shape[1]
        self._check_k(K)
        cfg = self.config
        out_dt = np.int32 if cfg.acc_bits <= 32 else np.int64
        out = np.zeros((M, _ceil(N, cfg.cols) * cfg.cols), dtype=out_dt)
        C = cfg.cols
        held: list = []

        def finish(key, replies):
            m0, mm, n0, nn = key
            words = self._unpack(MemSpace.ACC, replies)                # (nn*mm, C)
            out[m0:m0 + mm, n0 * C:(n0 + nn) * C] = \
                words.reshape(nn, mm, C).transpose(1, 0, 2).reshape(mm, nn * C)

        def whole(values):
            held.append(values.astype(out_dt, copy=False))

        start = self._begin()
        self._run_gemm(a, b, finish=finish, whole=whole)
        self._end(start, "matmul", {"m": M, "k": K, "n": N}, macs=M * K * N,
                  resident=isinstance(b, DeviceTensor))
        return (held[0] if held else out)[:, :N]

    # --- device memory -------------------------------------------------------------

    def upload(self, array, *, layout: str = "matmul") -> DeviceTensor:
        """Keep a weight matrix in device memory: it crosses the link once.

        Parameters
        ----------
        array : 2-D array
            ``layout="matmul"``: the ``(k, n)`` right operand of
            :meth:`matmul`, int8.  ``layout="linear"``: the ``(out_features,
            in_features)`` weight of :meth:`linear`, int8, or float -- then
            quantised once per output channel to int8, as :meth:`linear`
            quantises a float weight on every call, and the scales kept with
            the tensor.

        Returns
        -------
        DeviceTensor
            Pass it to :meth:`matmul` / :meth:`linear` instead of the array;
            :meth:`free` (or ``with``) gives its memory back.  Raises
            :class:`DeviceMemoryFull` when no free block holds it (nothing is
            sent then), ValueError on a device without device memory.
        """
        self._check_open()
        if self._memory is None:
            raise ValueError("this device has no device memory (device_memory='none'): pass "
                             "the array to matmul()/linear() itself")
        if layout not in ("matmul", "linear"):
            raise ValueError(f"layout must be 'matmul' or 'linear', not {layout!r}")
        if not isinstance(array, np.ndarray):
            raise TypeError(f"array must be a numpy array, not {type(array).__name__}")
        scales = norms = None
        if array.dtype.kind == "f":
            if layout != "linear":
                raise TypeError("a float matrix is uploaded as a linear weight "
                                "(layout='linear'); matmul() takes int8 operands")
            w = self._float_array("array", array, ndim=2)
            qmax = self.config.operand_max
            wmax = np.max(np.abs(w), axis=1).astype(np.float64)
            scales = np.where(wmax > 0, wmax / qmax, 1.0)
            q = np.clip(np.rint(w / scales[:, None]), -qmax, qmax).astype(np.int8)
            norms = np.linalg.norm(q.astype(np.float64), axis=1)
        else:
            q = self._int_operand("array", array)
        operand = q if layout == "matmul" else q.T
        K, N = operand.shape
        self._check_k(K)
        nbytes = resident_weight_bytes(self.config, K, N)
        addr = self._memory.allocate(nbytes, what=f"{tuple(array.shape)} {array.dtype} tensor")
        data = np.ascontiguousarray(self._weight_tiles(operand)).tobytes()
        try:
            start = self._begin()
            self._run_planned(upload_segments(self.config, addr, nbytes), lambda part: data)
            self._end(start, "upload", {"bytes": nbytes})
        except BaseException:
            self._memory.release(addr)
            raise
        t = DeviceTensor(tuple(array.shape), array.dtype, layout, addr, nbytes, scales,
                         _owner=self, _norms=norms)
        self._resident[addr] = t
        return t

    def free(self, tensor: DeviceTensor) -> None:
        """Give a resident tensor's device memory back (freeing twice is fine)."""
        if not isinstance(tensor, DeviceTensor):
            raise TypeError(f"tensor must be a DeviceTensor, not {type(tensor).__name__}")
        if tensor._owner is not self:
            raise ValueError("this tensor lives on another Accelerator")
        if tensor.freed:
            return
        self._memory.release(tensor.addr)
        self._resident.pop(tensor.addr, None)
        tensor.freed = True

    @property
    def device_memory(self) -> dict:
        """The device memory's use: capacity, used and free bytes, tensors."""
        if self._memory is None:
            return {"kind": "none", "capacity": 0, "used": 0, "free": 0, "tensors": 0}
        return {"kind": self.config.device_memory, "capacity": self._memory.capacity,
                "used": self._memory.used_bytes, "free": self._memory.free_bytes,
                "largest_free": self._memory.largest_free(), "tensors": len(self._resident)}

    def _resident_operand(self, name: str, t: DeviceTensor, layout: str) -> None:
        if t._owner is not self:
            raise ValueError(f"{name} is a DeviceTensor of another Accelerator")
        if t.lost:
            raise ValueError(f"{name} was lost when the device reset; upload it again")
        if t.freed:
            raise ValueError(f"{name} has been freed")
        if t.layout != layout:
            raise ValueError(f"{name} was uploaded with layout={t.layout!r}; {layout}() needs "
                             f"layout={layout!r}")

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
        if isinstance(w, DeviceTensor):
            self._resident_operand("w", w, "linear")
        if not isinstance(x, np.ndarray) or not isinstance(w, (np.ndarray, DeviceTensor)):
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
        if x.ndim < 1 or len(w.shape) != 2:
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
        self._check_linear_shapes(x, w)
        x = self._int_operand("x", x, ndim=None)
        resident = isinstance(w, DeviceTensor)
        if not resident:
            w = self._int_operand("w", w)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        M, K = x2.shape
        N = w.shape[0]
        self._check_k(K)
        if not self.config.has_activation:
            raise ValueError("this device's config has no activation unit "
                             "(has_activation=False): use matmul() and requantise on the "
                             "host, or run the model through an Executor "
                             "(hetaccel.workloads.placement), which does")
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
        act = _ActParams(self.config, fn, precision, b, mult, sh, slot)
        cfg = self.config
        C = cfg.cols
        out = np.zeros((M, _ceil(N, C) * C), dtype=np.int16)

        def finish(key, replies):
            m0, mm, n0, nn = key
            words = self._unpack(MemSpace.OUTPUT, replies)
            out[m0:m0 + mm, n0 * C:(n0 + nn) * C] = \
                words.reshape(nn, mm, C).transpose(1, 0, 2).reshape(mm, nn * C)

        start = self._begin()
        loaded = tab_bytes is not None and self._load_table(slot, tab_bytes)
        self._run_gemm(x2, w if resident else w.T, finish=finish, act=act)
        shape = {"m": M, "k": K, "n": N}
        self._end(start, op_name, shape, macs=M * K * N, table=loaded, resident=resident)
        res = out[:, :N]
        if precision == ActivationPrecision.INT8:
            res = res.astype(np.int8)
        return res.reshape(lead + (N,))

    def _linear_float(self, x, w, bias, fn, out_scale):
        x = self._float_array("x", x)
        resident = isinstance(w, DeviceTensor)
        if not resident:
            w = self._float_array("w", w, ndim=2)
        self._check_linear_shapes(x, w)
        N = w.shape[0]
        qmax = self.config.operand_max
        xs = float(np.max(np.abs(x))) / qmax or 1.0
        xq = np.clip(np.rint(x / xs), -qmax, qmax).astype(np.int8)
        if resident:
            # quantised once, at upload, exactly as below
            ws, wq, w_norms = w.scales, w, w._norms
        else:
            wmax = np.max(np.abs(w), axis=1).astype(np.float64)
            ws = np.where(wmax > 0, wmax / qmax, 1.0)
            wq = np.clip(np.rint(w / ws[:, None]), -qmax, qmax).astype(np.int8)
            w_norms = None
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
                wn = w_norms if w_norms is not None else \
                    np.linalg.norm(wq.astype(np.float64), axis=1)
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
        fn = _activation_kind(kind)
        self._check_open()
        if not self.config.has_activation:
            raise ValueError("this device's config has no activation unit "
                             "(has_activation=False): compute it on the host with "
                             "hetaccel.sim.activation_model (the same numerics), as an "
                             "Executor (hetaccel.workloads.placement) does")
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
            acc = x
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
        padded = np.zeros(rows * C, dtype=mem_word(cfg, MemSpace.ACC).dtype)
        padded[:flat.size] = flat
        data = padded.reshape(rows, C)
        result = np.zeros((rows, C), dtype=np.int16)
        pw = mem_word(cfg, MemSpace.ACT_PARAM)
        params = np.array([[b] * C, [mult] * C, [sh] * C], dtype=np.int64).astype(pw.dtype)
        flags = int(prec) | slot << ACT_TABLE_SHIFT

        def part(p):
            if p[0] == "params":
                return params.tobytes()
            _, r0, rr = p
            return data[r0:r0 + rr].tobytes()

        def finish(key, replies):
            r0, rr = key
            result[r0:r0 + rr] = self._unpack(MemSpace.OUTPUT, replies)

        start = self._begin()
        loaded = tab_bytes is not None and self._load_table(slot, tab_bytes)
        segments = activation_segments(cfg, flat.size, function=int(fn), flags=flags)
        dev = self.link.bulk_device
        if dev is None:
            self._run(self._schedule(segments, part, finish))
        else:
            self._run_activation_bulk(dev, ("activation", flat.size, int(fn), flags),
                                      list(segments), part, finish, result)
        self._end(start, "activation", {"elements": int(flat.size)}, table=loaded)
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
        self._check_open()
        if not self.config.has_adam:
            raise ValueError("this device's config has no Adam unit (has_adam=False): "
                             "step on the host with hetaccel.sim.adam_model (the same "
                             "numerics), as an Executor (hetaccel.workloads.placement) does")
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
        result = np.zeros_like(state)
        regs = {f"ADAM_{k.upper()}": hp[k] for k in ADAM_HYPERPARAMETERS}
        regs["ADAM_MODE"] = hp["mode"]

        def part(p):
            _, w0, ww = p
            return state[w0:w0 + ww].tobytes()

        def finish(key, replies):
            w0, ww = key
            result[w0:w0 + ww] = np.frombuffer(b"".join(replies), dtype="<f4").reshape(ww, L, 4)

        start = self._begin()
        self._run_planned(adam_segments(cfg, n), part, finish, regs)
        self._end(start, "adam_step", {"params": int(n)})
        flat = result.reshape(-1, 4)[:n]
        for i, name in ((0, "params"), (2, "m"), (3, "v")):
            arrays[name][...] = flat[:, i].reshape(params.shape)
        return params, m, v


class _ActParams:
    """The ACTIVATE fields and per-column-tile ACT_PARAM words of one linear."""

    def __init__(self, cfg: AcceleratorConfig, fn, precision, bias, mult, shift, slot):
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

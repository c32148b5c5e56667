"""Golden model of the board SDRAM behind :class:`hetaccel.rtl.sdram.SdramController`.

:class:`SdramModel` is two things:

* the chip's contents: the whole part as 16-bit words (one NumPy array,
  allocated on first use), read and written in 128-bit words -- one burst of
  8 beats, beat ``k`` at the 16-bit word address ``8 * addr + k`` (the
  mapping of :func:`hetaccel.spec.sdram.split_address`), i.e. exactly where
  the controller plus the chip store it;
* the controller's schedule, cycle for cycle: :meth:`SdramModel.schedule`
  replays the controller's registers on a request sequence and gives the
  cycle of every command on the pins, of every request taken, of every read
  word offered on ``rdata`` and of every write's last beat, plus the
  controller's counters.  Stretches in which nothing can change are skipped,
  so the cost is per event, not per cycle.  :meth:`SdramModel.transfer_cycles`
  is the fast path for long sequential and strided streams: it also jumps
  over runs of row hits whose state repeats every burst.

Cycles: cycle 0 is the first cycle in which the controller's ``init_done`` is
high, which is also the cycle its LOAD MODE REGISTER command is on the pins.
A command "at cycle c" is on the pins during cycle c (the chip samples it at
the end of c).  A request "presented at c" has ``cmd.valid`` (and for a write
``wdata.valid``) high from cycle c until it is taken.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..spec.sdram import (A10_ALL_BANKS, MODE_BURST_LENGTH, SdramChip, SdramCommand,
                          SdramTiming, check_controller)

__all__ = ["SdramModel", "Request", "Schedule", "Sequential", "Strided",
           "BURST_BYTES"]

BL = MODE_BURST_LENGTH
#: bytes in one request (one burst of 8 16-bit beats)
BURST_BYTES = 16

_NEED_ACT, _NEED_PRE, _READY = 0, 1, 2
_RUN, _REFRESH = 0, 1
_FAR = 1 << 62


@dataclass(frozen=True)
class Request:
    """One 128-bit transfer: ``addr`` in 128-bit words, presented at cycle
    ``present`` (it is taken no earlier than that, and never before the
    request in front of it)."""

    addr: int
    write: bool = False
    present: int = 0


@dataclass(frozen=True)
class Sequential:
    """``bursts`` consecutive 128-bit words from ``start``."""

    start: int
    bursts: int
    write: bool = False

    def __post_init__(self):
        for name in ("start", "bursts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, not {v!r}")

    def addresses(self):
        return range(self.start, self.start + self.bursts)


@dataclass(frozen=True)
class Strided:
    """``count`` runs of ``run`` consecutive words, run ``i`` starting at
    ``start + i * stride`` (e.g. the rows of a tile in a larger matrix)."""

    start: int
    run: int
    stride: int
    count: int
    write: bool = False

    def __post_init__(self):
        for name in ("start", "run", "stride", "count"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (name == "run"):
                raise ValueError(f"{name} must be a{' positive' if name == 'run' else ' non-negative'} "
                                 f"int, not {v!r}")

    def addresses(self):
        for i in range(self.count):
            base = self.start + i * self.stride
            yield from range(base, base + self.run)


@dataclass
class Schedule:
    """What the controller does with a request sequence.

    ``commands`` are ``(cycle, SdramCommand, ba, a)`` for every command other
    than NOP; ``ba``/``a`` are None where the controller leaves the pins as
    they were (PRECHARGE all has ``a = A10_ALL_BANKS``, AUTO REFRESH neither).
    ``taken[i]`` is the cycle request ``i`` was taken, ``issued[i]`` the cycle
    its READ/WRITE was on the pins, ``done[i]`` the cycle its word was taken
    from ``rdata`` (a read) or its last data beat was on the pins (a write).
    ``end`` is the cycle the counters are given for (they count cycles
    ``0 .. end - 1``).
    """

    commands: list
    taken: list
    issued: list
    done: list
    end: int
    busy_cycles: int
    bus_cycles: int
    refreshes: int
    row_misses: int

    @property
    def cycles(self) -> int:
        """Cycles from cycle 0 until every request is done (``max(done) + 1``)."""
        return max(self.done) + 1 if self.done else 0


class SdramModel:
    """The SDRAM contents and the controller's cycle-exact schedule.

    Parameters
    ----------
    chip : SdramChip
    timing : SdramTiming
        The timings the controller is built with.
    read_delay, rdata_depth : int
        As given to the controller.
    """

    def __init__(self, chip: SdramChip, timing: SdramTiming, *, read_delay: int = 0,
                 rdata_depth: int = 4):
        self.chip, self.timing = chip, timing
        self.read_delay, self.rdata_depth = read_delay, rdata_depth
        self.params = check_controller(chip, timing, read_delay, rdata_depth)
        self.words = chip.words // BL              # 128-bit words
        self._col_bursts = chip.cols // BL
        self._mem = None

    # -- contents ---------------------------------------------------------------------

    @property
    def memory(self) -> np.ndarray:
        """Every 16-bit word of the chip, by linear word address."""
        if self._mem is None:
            self._mem = np.zeros(self.chip.words, dtype=np.uint16)
        return self._mem

    def _check_addr(self, addr, n=1):
        if isinstance(addr, bool) or not isinstance(addr, (int, np.integer)) \
                or not 0 <= addr or addr + n > self.words:
            raise ValueError(f"addr must be a 128-bit word address with {n} word(s) in "
                             f"[0, {self.words}), not {addr!r}")

    def write(self, addr: int, value) -> None:
        """Store one 128-bit word: an int, 16 bytes (little-endian) or 8 beats."""
        self._check_addr(addr)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if not 0 <= value < 1 << 128:
                raise ValueError(f"value must be a 128-bit unsigned int, not {value!r}")
            beats = np.frombuffer(int(value).to_bytes(16, "little"), dtype="<u2")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            if len(value) != BURST_BYTES:
                raise ValueError(f"value must be {BURST_BYTES} bytes, not {len(value)}")
            beats = np.frombuffer(bytes(value), dtype="<u2")
        else:
            beats = np.asarray(value)
            if beats.shape != (BL,) or beats.dtype.kind not in "ui" \
                    or (beats < 0).any() or (beats > 0xFFFF).any():
                raise ValueError(f"value must be an int, 16 bytes or 8 16-bit beats, "
                                 f"not {value!r}")
        self.memory[addr * BL:(addr + 1) * BL] = beats

    def read(self, addr: int) -> np.ndarray:
        """The 8 beats (uint16) of one 128-bit word."""
        self._check_addr(addr)
        return self.memory[addr * BL:(addr + 1) * BL].copy()

    def read_int(self, addr: int) -> int:
        return int.from_bytes(self.read(addr).astype("<u2").tobytes(), "little")

    def write_bytes(self, addr: int, data) -> None:
        """Store ``len(data) // 16`` consecutive words from ``addr``."""
        data = bytes(data)
        if len(data) % BURST_BYTES:
            raise ValueError(f"data must be a multiple of {BURST_BYTES} bytes, "
                             f"not {len(data)}")
        n = len(data) // BURST_BYTES
        self._check_addr(addr, n)
        self.memory[addr * BL:(addr + n) * BL] = np.frombuffer(data, dtype="<u2")

    def read_bytes(self, addr: int, n: int) -> bytes:
        """``n`` consecutive words from ``addr`` as bytes."""
        self._check_addr(addr, n)
        return self.memory[addr * BL:(addr + n) * BL].astype("<u2").tobytes()

    # -- schedule ---------------------------------------------------------------------

    def schedule(self, requests, *, rdata_ready=None, until: int | None = None,
                 fast: bool = False) -> Schedule:
        """Replay the controller on ``requests`` (a sequence of :class:`Request`).

        ``rdata_ready(cycle) -> bool`` is the consumer's ``rdata.ready``
        (always 1 when None).  The run ends when every request is done, or
        at cycle ``until`` if that is later (to see the refreshes after).
        ``fast`` repeats whole bursts where the controller's state repeats
        (same result; only with ``rdata_ready`` and ``until`` None).
        """
        if fast and (rdata_ready is not None or until is not None):
            raise ValueError("fast=True needs rdata_ready=None and until=None")
        reqs = list(requests)
        for r in reqs:
            if not isinstance(r, Request):
                raise TypeError(f"requests must be Request objects, not {r!r}")
            self._check_addr(r.addr)
        return _Engine(self, reqs, rdata_ready, fast=fast).run(until)

    def transfer_cycles(self, pattern) -> int:
        """Cycles from cycle 0 until a stream is done, every request presented
        at cycle 0 and ``rdata`` always ready: ``schedule(...).cycles`` of the
        stream, found without stepping every burst of long row-hit runs.

        ``pattern`` is a :class:`Sequential` or :class:`Strided` (or any
        object with ``addresses()`` and ``write``).
        """
        reqs = [Request(a, bool(pattern.write), 0) for a in pattern.addresses()]
        for r in reqs[:1] + reqs[-1:]:
            self._check_addr(r.addr)
        if not reqs:
            return 0
        engine = _Engine(self, reqs, None, fast=True, logs=False)
        engine.run(None)
        return engine.last_done + 1


class _Engine:
    """The controller's registers, one decision cycle at a time.

    Internally ``T`` is the decision cycle: a command chosen in ``T`` is on
    the pins in ``T + 1``; ``rdata``, the counters and ``cmd.ready`` belong
    to ``T`` itself.  Every timer is the first cycle its constraint allows,
    and a new load replaces it, as in the RTL.
    """

    def __init__(self, model: SdramModel, reqs, ready, fast=False, logs=True):
        t, p = model.timing, model.params
        self.m, self.t, self.p = model, t, p
        self.reqs = reqs
        self.ready = ready
        self.fast = fast and ready is None
        self.logs = logs            # fill in the per-request lists for skipped bursts too
        cb = model._col_bursts
        self.dec = [(r.addr % cb, (r.addr // cb) % 4, r.addr // (cb * 4), bool(r.write))
                    for r in reqs]
        self.first = t.cas_latency + model.read_delay
        self.L = self.first + BL
        nb = 4
        # state right after the LOAD MODE decision (cycle -1)
        self.state = _RUN
        self.gap_at = -1 + t.mrd
        # the second init AUTO REFRESH was decided rfc cycles before LOAD MODE
        self.ref_at = -1 - t.rfc + p["refresh_interval"]
        self.rrd_at = self.rdbus_at = self.wrbus_at = -_FAR
        self.rcd_at = [-_FAR] * nb
        self.ras_at = [-_FAR] * nb
        self.rc_at = [-_FAR] * nb
        self.rp_at = [-_FAR] * nb
        self.dat_at = [-_FAR] * nb
        self.open = [False] * nb
        self.row = [0] * nb
        self.in_idx = None
        self.head = None            # [idx, state]
        self.next_req = 0
        self.credits = model.rdata_depth
        self.rpipe = deque()        # read decision cycles still in the capture pipeline
        self.rpipe_idx = deque()
        self.fifo = deque()
        self.last_w = -_FAR
        self.busy = self.bus = self.refreshes = self.row_misses = 0
        n = len(reqs)
        self.taken = [None] * n
        self.issued = [None] * n
        self.done = [None] * n
        self.ndone = 0
        self.commands = []
        self.ev = []                # (kind, request, cycle) for the fast path
        self.last_done = -1
        self.rw_at = None           # decision cycle of the last READ/WRITE

    def _bank_at(self, T, b):
        return T >= self.rc_at[b] and T >= self.rp_at[b]

    def _pre_ok(self, T, b):
        return T >= self.ras_at[b] and T >= self.dat_at[b]

    def _busy_bus(self, T):
        rp = self.rpipe
        busy = (self.in_idx is not None or self.head is not None or bool(self.fifo)
                or (rp and rp[-1] >= T - self.L)
                or self.last_w + 1 <= T <= self.last_w + BL)
        f = self.first
        cap = any(r + f + 1 <= T <= r + f + BL for r in rp)
        return bool(busy), cap or self.last_w + 1 <= T <= self.last_w + BL

    def step(self, T) -> bool:
        """Decision cycle ``T``; returns whether anything happened."""
        t, p = self.t, self.p
        due = T >= self.ref_at
        run = self.state == _RUN and T >= self.gap_at
        rw = pre = act = prea = refgo = False
        head = self.head
        if run and not due and head is not None:
            col, b, row, w = self.dec[head[0]]
            if head[1] == _READY:
                rw = T >= self.rcd_at[b] and (
                    T >= self.wrbus_at if w else (T >= self.rdbus_at and self.credits > 0))
            elif head[1] == _NEED_PRE:
                pre = self._pre_ok(T, b)
            else:
                act = self._bank_at(T, b) and T >= self.rrd_at
        if run and due:
            prea = all(self._pre_ok(T, b) for b in range(4))
        if self.state == _REFRESH:
            refgo = all(self._bank_at(T, b) for b in range(4))
        load = self.in_idx is not None and (head is None or rw)
        if load:
            # the hit/miss against the table as it is during T
            _, b, row, _ = self.dec[self.in_idx]
            if prea or not self.open[b]:
                in_state = _NEED_ACT
            else:
                in_state = _READY if self.row[b] == row else _NEED_PRE
        k = self.next_req
        accept = (self.in_idx is None and k < len(self.reqs) and self.reqs[k].present <= T)
        push = bool(self.rpipe) and self.rpipe[0] == T - self.L
        pop = bool(self.fifo) and (self.ready is None or bool(self.ready(T)))
        busy, bus = self._busy_bus(T)
        self.busy += busy
        self.bus += bus
        if not (rw or pre or act or prea or refgo or load or accept or push or pop):
            return False

        # -- register updates at the end of T --
        pin = T + 1
        cmds = self.commands
        if rw:
            idx = head[0]
            col, b, row, w = self.dec[idx]
            cmds.append((pin, SdramCommand.WRITE if w else SdramCommand.READ, b, col * BL))
            self.issued[idx] = pin
            self.rw_at = T
            self._rw_idx = idx
            self.ev.append(("i", idx, pin))
            self.rdbus_at = T + max(p["read_to_read"], 1)
            self.dat_at[b] = T + (p["write_to_precharge"] if w else p["read_to_precharge"])
            if w:
                self.wrbus_at = T + p["write_to_write"]
                self.last_w = T
                self.done[idx] = T + BL
                self.last_done = max(self.last_done, T + BL)
                self.ev.append(("d", idx, T + BL))
                self.ndone += 1
            else:
                self.wrbus_at = T + p["read_to_write"]
                self.rpipe.append(T)
                self.rpipe_idx.append(idx)
        if pre:
            b = self.dec[head[0]][1]
            cmds.append((pin, SdramCommand.PRECHARGE, b, 0))
            self.rp_at[b] = T + max(t.rp, 1)
            self.open[b] = False
            self.row_misses += 1
        if act:
            _, b, row, _ = self.dec[head[0]]
            cmds.append((pin, SdramCommand.ACTIVE, b, row))
            self.rcd_at[b] = T + max(t.rcd, 1)
            self.ras_at[b] = T + max(t.ras, 1)
            self.rc_at[b] = T + max(t.rc, 1)
            self.rrd_at = T + max(t.rrd, 1)
            self.open[b] = True
            self.row[b] = row
        if prea:
            cmds.append((pin, SdramCommand.PRECHARGE, None, A10_ALL_BANKS))
            for b in range(4):
                self.rp_at[b] = T + max(t.rp, 1)
                self.open[b] = False
            self.state = _REFRESH
        if refgo:
            cmds.append((pin, SdramCommand.AUTO_REFRESH, None, None))
            self.gap_at = T + max(t.rfc, 1)
            self.ref_at = T + p["refresh_interval"]
            self.state = _RUN
            self.refreshes += 1
        # head and the request register
        if load:
            idx = self.in_idx
            self.head = [idx, in_state]
            self.in_idx = None
        else:
            if rw:
                self.head = None
            if pre or (prea and head is not None):
                head[1] = _NEED_ACT
            if act:
                head[1] = _READY
        if accept:
            self.in_idx = k
            self.taken[k] = T
            self.ev.append(("t", k, T))
            self.next_req = k + 1
        # read data
        if push:
            self.rpipe.popleft()
            self.fifo.append(self.rpipe_idx.popleft())
        if pop:
            idx = self.fifo.popleft()
            self.done[idx] = T
            self.last_done = max(self.last_done, T)
            self.ev.append(("d", idx, T))
            self.ndone += 1
        self.credits += pop - (rw and not self.dec[head[0]][3])
        return True

    def _next_event(self, T) -> int:
        cands = [self.gap_at, self.ref_at, self.rrd_at, self.rdbus_at, self.wrbus_at,
                 *self.rcd_at, *self.ras_at, *self.rc_at, *self.rp_at, *self.dat_at]
        k = self.next_req
        if k < len(self.reqs):
            cands.append(self.reqs[k].present)
        f, L = self.first, self.L
        for r in self.rpipe:
            cands += (r + L, r + L + 1, r + f + 1, r + f + BL + 1)
        w = self.last_w
        cands += (w + 1, w + BL + 1)
        if self.fifo:
            cands.append(T + 1)
        return min((c for c in cands if c > T), default=_FAR)

    # -- fast path: runs of bursts whose state repeats ---------------------------------

    def _snapshot(self, T, idx):
        """Everything the next cycles depend on, relative to cycle ``T`` and
        request ``idx`` (the refresh timer apart, which is absolute)."""
        def rel(at):
            return max(at - T, 0)

        def req(k):
            return None if k is None else (k - idx, self.dec[k][1:])

        return (self.state, rel(self.gap_at), rel(self.rrd_at), rel(self.rdbus_at),
                rel(self.wrbus_at), tuple(map(rel, self.rcd_at)), tuple(map(rel, self.ras_at)),
                tuple(map(rel, self.rc_at)), tuple(map(rel, self.rp_at)),
                tuple(map(rel, self.dat_at)), tuple(self.open), tuple(self.row),
                req(self.in_idx), None if self.head is None else (req(self.head[0]),
                                                                  self.head[1]),
                self.next_req - idx, self.credits, self.dec[idx][1:],
                tuple(r - T for r in self.rpipe), tuple(k - idx for k in self.rpipe_idx),
                tuple(k - idx for k in self.fifo), max(self.last_w - T, -BL - 2))

    def _try_skip(self, T, prev):
        """After the READ/WRITE decided in ``T``: if the state repeats the one
        after the previous READ/WRITE, repeat that period as long as the
        requests ahead are the same kind of row hit and no refresh falls due."""
        idx = self._rw_idx
        snap = self._snapshot(T, idx)
        cur = (snap, T, idx, len(self.ev), len(self.commands), self.busy, self.bus,
               self.refreshes, self.row_misses)
        if prev is None or prev[0] != snap or idx != prev[2] + 1:
            return T, cur
        _, T0, _, ev0, cm0, busy0, bus0, ref0, miss0 = prev
        P = T - T0
        if len(self.commands) - cm0 != 1 or self.refreshes != ref0 or self.row_misses != miss0:
            return T, cur
        period = self.ev[ev0:]
        n = len(self.reqs)
        # requests that enter the pipeline during a repeated period must look
        # like the ones that did in this one: same bank, row and direction, and
        # presented in time to be taken at the same offset
        ahead = self.next_req                      # the next request to be taken
        taken_off = [(k - idx, c - T) for kind, k, c in period if kind == "t"]
        # each was taken as soon as the request register was free, not when it
        # was presented, so a repeat takes its counterpart at the same offset
        if any(self.reqs[idx + dk].present >= T + dc for dk, dc in taken_off):
            return T, cur
        m_ref = (self.ref_at - 1 - T) // P         # stay clear of the refresh
        m = 0
        kind_now = self.dec[idx][1:]
        limit = min(m_ref, n - ahead - 1)
        while m < limit:
            j = m + 1
            ok = True
            for dk, dc in taken_off:
                k = idx + dk + j
                if k >= n or self.dec[k][1:] != kind_now or self.reqs[k].present >= T + dc + j * P:
                    ok = False
                    break
            if not ok:
                break
            m = j
        if m <= 0:
            return T, cur
        dbusy, dbus = self.busy - busy0, self.bus - bus0
        if self.logs:
            for j in range(1, m + 1):
                for kind, k, c in period:
                    k2, c2 = k + j, c + j * P
                    if kind == "t":
                        self.taken[k2] = c2
                    elif kind == "i":
                        self.issued[k2] = c2
                        col, b, _, w = self.dec[k2]
                        self.commands.append((c2, SdramCommand.WRITE if w else
                                              SdramCommand.READ, b, col * BL))
                    else:
                        self.done[k2] = c2
        dones = [c for kind, _, c in period if kind == "d"]
        self.ndone += m * len(dones)
        if dones:
            self.last_done = max(self.last_done, max(dones) + m * P)
        shift = m * P
        self.busy += m * dbusy
        self.bus += m * dbus
        for name in ("gap_at", "rrd_at", "rdbus_at", "wrbus_at", "last_w"):
            setattr(self, name, getattr(self, name) + shift)
        for name in ("rcd_at", "ras_at", "rc_at", "rp_at", "dat_at"):
            setattr(self, name, [x + shift for x in getattr(self, name)])
        if self.in_idx is not None:
            self.in_idx += m
        if self.head is not None:
            self.head[0] += m
        self.next_req += m
        self.rpipe = deque(r + shift for r in self.rpipe)
        self.rpipe_idx = deque(k + m for k in self.rpipe_idx)
        self.fifo = deque(k + m for k in self.fifo)
        self._rw_idx = idx + m
        T += shift
        return T, (self._snapshot(T, idx + m), T, idx + m, len(self.ev), len(self.commands),
                   self.busy, self.bus, self.refreshes, self.row_misses)

    def run(self, until):
        n = len(self.reqs)
        T = 0
        prev = None
        while self.ndone < n or (until is not None and T < until):
            if self.step(T):
                if self.fast and self.rw_at == T:
                    T, prev = self._try_skip(T, prev)
                T += 1
                continue
            E = self._next_event(T)
            if until is not None and self.ndone >= n:
                E = min(E, until)
            if E >= _FAR:
                raise RuntimeError(f"SDRAM model stuck at cycle {T} with "
                                   f"{n - self.ndone} requests not done")
            # cycles T+1 .. E-1 look like T: nothing happens, counters run on
            busy, bus = self._busy_bus(T)
            self.busy += busy * (E - T - 1)
            self.bus += bus * (E - T - 1)
            T = E
        return Schedule(self.commands, self.taken, self.issued, self.done, T,
                        self.busy, self.bus, self.refreshes, self.row_misses)

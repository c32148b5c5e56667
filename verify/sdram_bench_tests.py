"""cocotb side of ``hetaccel bench sdram``: request phases played at full rate.

:mod:`hetaccel.bench.sdram` writes a request file (JSON; its path in
``$HETACCEL_SDRAM_BENCH``) naming the controller's timing, the part the chip
model plays and a list of *phases*, each a sequence of 128-bit requests
``(addr, write)``.  ``sdram_bench`` plays them against
:class:`~hetaccel.rtl.sdram.SdramController` with
:class:`~hetaccel.verify.sdram_chip.SdramChipBus` on its pins, so every
measured cycle is also checked against the datasheet rules (a violation fails
the test), and writes what it saw to the file the request names.

Driving, one clock loop: a phase is presented in the cycle after the
controller's ``ready`` is seen high (the previous phase entirely done), and
from then on ``cmd.valid`` stays high, with the next request, until the
phase's last request is taken; a write's ``wdata`` is offered with its
command.  ``rdata.ready`` follows :func:`ready_function` of the request's
``rdata_ready`` pattern (all ones: never a stall).

Cycles are counted as in :class:`~hetaccel.sim.sdram_model.SdramModel`: cycle
0 is the first cycle ``init_done`` is high.  A phase's window runs from the
cycle its first request is taken to the cycle before ``ready`` rises again,
i.e. the cycle its last read word is taken from ``rdata`` or its last write
beat is on the pins.  The controller's ``refreshes`` and ``row_misses`` are
sampled at both ends of the window.

Data: every address any phase touches is first loaded with random words in
both the chip model and an :class:`SdramModel` (so a read phase needs no write
phase before it); each write taken is replayed on the model, each read taken
remembers the word the model holds then, and each word delivered on ``rdata``
must equal it.  At the end the chip model's contents of every written address
must equal the model's.  Mismatches are reported in the output, not raised:
the bench reports them.
"""

from __future__ import annotations

import collections
import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from ..sim.sdram_model import BURST_BYTES, SdramModel
from ..spec.sdram import CHIPS, MODE_BURST_LENGTH, SdramTiming
from .sdram_chip import SdramChipModel
from .sdram_tests import reset_until_initialised

__all__ = ["ready_function", "word_beats", "COUNTERS"]

_REQUEST = os.environ.get("HETACCEL_SDRAM_BENCH")
#: controller counters sampled at the ends of every phase
COUNTERS = ("refreshes", "row_misses")
#: data mismatches described in the output per phase (all are counted)
_MAX_ERRORS = 5


def ready_function(pattern: str):
    """``rdata.ready`` in cycle ``c`` is ``pattern[c % len(pattern)] == "1"``;
    None for a pattern of ones (the consumer never stalls)."""
    if not isinstance(pattern, str) or not pattern or set(pattern) - {"0", "1"} \
            or "1" not in pattern:
        raise ValueError(f"rdata_ready must be a string of 0s and 1s with at least one 1, "
                         f"not {pattern!r}")
    if "0" not in pattern:
        return None
    bits = tuple(ch == "1" for ch in pattern)
    n = len(bits)
    return lambda c: bits[c % n]


def word_beats(word: int) -> list[int]:
    """The 8 16-bit beats of a 128-bit word, beat 0 in bits 0..15."""
    return [(word >> (16 * k)) & 0xFFFF for k in range(MODE_BURST_LENGTH)]


def _counters(dut) -> dict:
    return {name: int(getattr(dut, name).value) for name in COUNTERS}


@cocotb.test(skip=_REQUEST is None)
async def sdram_bench(dut):
    """Play the request file's phases; write cycles, counters and data checks."""
    with open(_REQUEST) as f:
        req = json.load(f)
    timing = SdramTiming(**req["timing"])
    chip = CHIPS[req["chip"]]
    model = SdramModel(chip, timing, rdata_depth=req["rdata_depth"])
    chip_model = SdramChipModel(chip, req["clock_hz"], cas_latency=timing.cas_latency,
                                power_up_cycles=req["power_up"])
    rng = random.Random(req["seed"])
    phases = req["phases"]
    ready = ready_function(req["rdata_ready"])
    addr_bits = req["addr_bits"]

    # the same random contents in the chip and the model wherever a phase goes
    for a in sorted({a for ph in phases for a in ph["addrs"]}):
        word = rng.getrandbits(128)
        model.write(a, word)
        chip_model.write_words(a * MODE_BURST_LENGTH, word_beats(word))

    cocotb.start_soon(Clock(dut.clk, round(1e9 / req["clock_hz"], 3), unit="ns").start())
    cmd_valid, cmd_payload, cmd_ready = dut.cmd__valid, dut.cmd__payload, dut.cmd__ready
    wdata_valid, wdata_payload = dut.wdata__valid, dut.wdata__payload
    rdata_valid, rdata_payload, rdata_ready = dut.rdata__valid, dut.rdata__payload, dut.rdata__ready
    ctrl_ready = dut.ready
    bus = await reset_until_initialised(dut, chip_model)
    t0 = time.perf_counter()

    recs = []
    expected = collections.deque()     # (addr, word, phase record) of reads taken
    written = set()
    pi = -1                            # the phase being played
    addrs = writes = ()
    k = n = 0
    offering = False                   # cmd.valid high in this cycle
    wait_from = 0                      # first cycle to look for ready (phase done)
    before = None                      # counters at the last cycle ready was low
    word = 0
    driven = None                      # (phase, request) on cmd/wdata now
    progress = 0                       # the last cycle anything was taken or started
    # a controller that stops working must fail the run, not hang it: nothing
    # legitimate (a refresh, a stalled consumer) holds it up this long
    patience = 4 * timing.refi + 64 * len(req["rdata_ready"])
    c = 0                              # cycle 0: init_done just rose, we are in ReadOnly
    while True:
        # -- ReadOnly of cycle c: the handshakes that complete at its end --
        if offering and int(cmd_ready.value):
            rec = recs[-1]
            rec["taken"].append(c)
            progress = c
            a = addrs[k]
            if writes[k]:
                model.write(a, word)
                written.add(a)
            else:
                expected.append((a, model.read_int(a), rec))
            k += 1
            if k == n:
                offering = False
                wait_from = c + 1
                before = _counters(dut)     # the window may end in this very cycle
        rdy = ready is None or ready(c)
        if rdy and int(rdata_valid.value):
            got = int(rdata_payload.value)
            if not expected:
                raise AssertionError(f"cycle {c}: a read word nobody asked for")
            a, want, rec = expected.popleft()
            rec["read_done"].append(c)
            progress = c
            rec["words_checked"] += 1
            if got != want:
                rec["error_count"] += 1
                if len(rec["errors"]) < _MAX_ERRORS:
                    rec["errors"].append(f"cycle {c}: word 0x{a:x} read 0x{got:032x}, "
                                         f"expected 0x{want:032x}")
        if not offering and c >= wait_from:
            if int(ctrl_ready.value):
                if recs:
                    recs[-1]["end"] = c - 1
                    recs[-1]["counters_after"] = before
                pi += 1
                if pi == len(phases):
                    break
                ph = phases[pi]
                addrs, writes = ph["addrs"], ph["writes"]
                k, n = 0, len(addrs)
                recs.append({"name": ph["name"], "present": c + 1, "taken": [],
                             "read_done": [], "counters_before": _counters(dut),
                             "words_checked": 0, "error_count": 0, "errors": []})
                offering = n > 0
                wait_from = c + 1
                progress = c
                if not offering:
                    raise AssertionError(f"phase {ph['name']!r} has no requests")
            else:
                before = _counters(dut)
        if c - progress > patience:
            raise AssertionError(
                f"cycle {c}: no progress for {c - progress} cycles in phase "
                f"{phases[pi]['name']!r}: {k}/{n} requests taken, "
                f"{len(expected)} read words outstanding, controller ready="
                f"{int(ctrl_ready.value)}")
        await RisingEdge(dut.clk)
        c += 1
        # -- cycle c: drive the inputs for its end --
        if offering:
            if driven != (pi, k):
                # a request not taken stays on the inputs unchanged
                driven = (pi, k)
                w = writes[k]
                cmd_valid.value = 1
                cmd_payload.value = addrs[k] | w << addr_bits
                wdata_valid.value = w
                if w:
                    word = rng.getrandbits(128)
                    wdata_payload.value = word
        elif driven is not None:
            driven = None
            cmd_valid.value = 0
            wdata_valid.value = 0
        if ready is not None:
            rdata_ready.value = int(ready(c))
        await ReadOnly()
    sim_s = time.perf_counter() - t0
    bus.check()
    bus.stop()

    # the write path: what the chip holds is what the model holds
    memory_errors, bad = [], []
    for a in sorted(written):
        got = chip_model.read_words(a * MODE_BURST_LENGTH, MODE_BURST_LENGTH)
        want = [int(x) for x in model.read(a)]
        if got != want:
            bad.append(a)
            if len(memory_errors) < _MAX_ERRORS:
                memory_errors.append(f"word 0x{a:x}: chip holds {got}, model {want}")
    out = {
        "phases": recs,
        "cycles": c,
        "sim_s": sim_s,
        "written_words_checked": len(written),
        "written_words_bad": bad,           # their addresses
        "memory_errors": memory_errors,
        "uninitialised_reads": len(chip_model.uninitialised_reads),
        "chip_commands": {cmd.name: int(v) for cmd, v in chip_model.counts.items()},
        "bytes_per_request": BURST_BYTES,
    }
    with open(req["out"], "w") as f:
        json.dump(out, f)

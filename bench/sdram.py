"""``hetaccel bench sdram``: sustained bandwidth of the SDRAM controller RTL.

:class:`~hetaccel.rtl.sdram.SdramController`, built for the worst case of the
board's chips, runs in an RTL simulator with the chip model
(:class:`~hetaccel.verify.sdram_chip.SdramChipModel` playing one of the parts)
on its pins, so every measured run is also checked against the datasheet
rules.  :mod:`hetaccel.verify.sdram_bench_tests` plays the patterns at full
rate: ``cmd.valid`` high every cycle until the pattern's last request is
taken, ``wdata`` offered with every write, ``rdata.ready`` high (or following
``--rdata-ready``).

Patterns, each started once the previous one is entirely done:

* ``sequential_write``, ``sequential_read``: ``--bursts`` consecutive 128-bit
  words (the read reads what the write wrote);
* ``tile_write``, ``tile_read``: a tile of ``--tile-rows`` rows of
  ``--tile-row-bursts`` bursts, its rows ``--tile-stride`` bytes apart (the
  defaults: 256-byte rows of a matrix whose rows are 1536 bytes, a weight
  tile of a MiniLM-sized layer);
* ``mixed``: reads of one stream alternating with writes of another
  ``--mixed-offset`` bytes further on (a copy; the default offset puts the
  two streams in different banks, so both rows stay open).

A pattern's cycles run from the cycle its first request is accepted to the
cycle its last read word is delivered or its last write beat is on the pins;
MB/s are at the controller's clock and the peak is the bus's 2 bytes per
cycle.  The cycle model's prediction is
:meth:`SdramModel.schedule <hetaccel.sim.sdram_model.SdramModel.schedule>` of
the same requests presented in the same cycles; ``model_diff`` is its cycles
minus the measured ones (0 when the model is exact), ``model_schedule_exact``
whether every request was taken and every read word delivered in the cycle
the model says.  The data check compares every word read with what the model
stores and, at the end, the chip model's contents with the model's wherever a
pattern wrote (``data_ok`` per pattern, ``correct`` for the whole run; a
datasheet rule broken fails the run).

The controller's power-up wait (the datasheet's 100-200 us of NOPs) is
shortened to :data:`POWER_UP_CYCLES` in the simulation, and the chip model is
told so: it lies before cycle 0, outside every measured window.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from ..rtl.sdram import SdramController
from ..sim.sdram_model import BURST_BYTES, Request, SdramModel, Sequential, Strided
from ..spec.sdram import (CHIPS, MODE_BURST_LENGTH, SdramChip, SdramCommand, ULX3S_CHIPS,
                          worst_case)
from ..verify.cocotb_runner import SIMULATORS, run_cocotb, stdout_to_stderr
from ..verify.sdram_bench_tests import ready_function

HELP = ("SDRAM controller RTL with the chip model: sustained MB/s of sequential, tile and "
        "mixed streams, cycle model, data check")

__all__ = ["HELP", "add_arguments", "run", "PATTERNS", "TARGETS", "POWER_UP_CYCLES",
           "build_patterns"]

#: the patterns in the order they run
PATTERNS = ("sequential_write", "sequential_read", "tile_write", "tile_read", "mixed")
#: percent of the bus peak each pattern is expected to reach (the output compares)
TARGETS = {"sequential_read": 80.0, "tile_read": 60.0}
#: the controller's and the chip model's power-up wait in the simulation
POWER_UP_CYCLES = 64


def add_arguments(parser) -> None:
    parser.add_argument("--sim", choices=SIMULATORS, default="verilator", help="RTL simulator")
    parser.add_argument("--chip", choices=ULX3S_CHIPS, default="MT48LC16M16A2-75",
                        help="the part the chip model plays (the controller is built for the "
                             "worst case of all the board's parts)")
    parser.add_argument("--clock-mhz", type=float, default=100.0,
                        help="controller clock (CAS latency 3)")
    parser.add_argument("--bursts", type=int, default=2560,
                        help="128-bit requests of each sequential and mixed pattern, and of the "
                             "tile patterns unless --tile-rows is given")
    parser.add_argument("--patterns", default=",".join(PATTERNS),
                        help=f"comma-separated subset of {','.join(PATTERNS)}")
    parser.add_argument("--tile-row-bursts", type=int, default=16,
                        help="bursts (16 bytes) in each row of the tile")
    parser.add_argument("--tile-stride", type=int, default=1536,
                        help="bytes from one tile row to the next (a multiple of 16)")
    parser.add_argument("--tile-rows", type=int, default=None,
                        help="rows of the tile (default: enough for --bursts)")
    parser.add_argument("--mixed-offset", type=int, default=264192,
                        help="bytes from the mixed pattern's read stream to its write stream "
                             "(a multiple of 16; the default is 64 rows and 2 banks away)")
    parser.add_argument("--rdata-ready", default="1",
                        help="rdata.ready pattern repeated over the cycles, e.g. 1110 for a "
                             "consumer that stalls every fourth cycle")
    parser.add_argument("--rdata-depth", type=int, default=4,
                        help="read FIFO depth of the controller (a power of two)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random data")


@dataclasses.dataclass(frozen=True)
class _Pattern:
    name: str
    addrs: list
    writes: list


def _check_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, not {value!r}")


def _check_bytes(name, value, low):
    _check_int(name, value, low)
    if value % BURST_BYTES:
        raise ValueError(f"{name} must be a multiple of {BURST_BYTES} bytes, not {value!r}")
    return value // BURST_BYTES


def build_patterns(chip: SdramChip, *, bursts: int, tile_row_bursts: int, tile_stride: int,
                   tile_rows: int | None, mixed_offset: int) -> dict:
    """Every pattern's requests (``name -> _Pattern``), in disjoint regions of
    ``chip``, each starting on a row of bank 0."""
    row_words = chip.cols // MODE_BURST_LENGTH           # 128-bit words in a bank's row
    row_span = row_words * chip.banks                     # ... in one row of every bank
    words = chip.words // MODE_BURST_LENGTH
    _check_int("--bursts", bursts, 2)
    _check_int("--tile-row-bursts", tile_row_bursts)
    stride = _check_bytes("--tile-stride", tile_stride, tile_row_bursts * BURST_BYTES)
    if tile_rows is None:
        tile_rows = -(-bursts // tile_row_bursts)
    _check_int("--tile-rows", tile_rows)
    offset = _check_bytes("--mixed-offset", mixed_offset, BURST_BYTES)
    pairs = bursts // 2

    def align(x):
        return -(-x // row_span) * row_span

    seq_base = 0
    tile_base = align(seq_base + bursts)
    mixed_base = align(tile_base + (tile_rows - 1) * stride + tile_row_bursts)
    top = max(mixed_base + pairs, mixed_base + offset + pairs)
    if top > words:
        raise ValueError(f"the patterns need {top} words of 16 bytes but the part has {words}: "
                         f"--bursts, --tile-rows x --tile-stride or --mixed-offset must be "
                         f"smaller")
    seq = list(Sequential(seq_base, bursts).addresses())
    tile = list(Strided(tile_base, tile_row_bursts, stride, tile_rows).addresses())
    mixed = [a for i in range(pairs) for a in (mixed_base + i, mixed_base + offset + i)]
    return {
        "sequential_write": _Pattern("sequential_write", seq, [1] * len(seq)),
        "sequential_read": _Pattern("sequential_read", seq, [0] * len(seq)),
        "tile_write": _Pattern("tile_write", tile, [1] * len(tile)),
        "tile_read": _Pattern("tile_read", tile, [0] * len(tile)),
        "mixed": _Pattern("mixed", mixed, [0, 1] * pairs),
    }


def _selected(text) -> list:
    names = [s.strip() for s in str(text).split(",") if s.strip()]
    unknown = [s for s in names if s not in PATTERNS]
    if not names or unknown:
        raise ValueError(f"--patterns must be a comma-separated subset of "
                         f"{','.join(PATTERNS)}, not {text!r}")
    return [p for p in PATTERNS if p in names]      # always in the run order


def _window_commands(commands, start, end):
    refreshes = misses = 0
    for c, cmd, _ba, a in commands:
        if start <= c <= end:
            refreshes += cmd == SdramCommand.AUTO_REFRESH
            misses += cmd == SdramCommand.PRECHARGE and a is not None and not a & (1 << 10)
    return refreshes, misses


def _entry(p, rec, sched, i0, i1, clock_hz, bad_written) -> dict:
    """One pattern's figures: measured (``rec``, from the simulation) next to
    the model's ``sched`` of its requests ``i0 .. i1 - 1``."""
    start, end = rec["taken"][0], rec["end"]
    cycles = end - start + 1
    m_start, m_end = sched.taken[i0], max(sched.done[i0:i1])
    m_cycles = m_end - m_start + 1
    m_read_done = [d for d, w in zip(sched.done[i0:i1], p.writes) if not w]
    exact = (rec["taken"] == sched.taken[i0:i1] and rec["read_done"] == m_read_done
             and end == m_end)
    m_refreshes, m_misses = _window_commands(sched.commands, m_start, m_end)
    reads = p.writes.count(0)
    n_bytes = len(p.addrs) * BURST_BYTES
    mb_s = n_bytes * clock_hz / cycles / 1e6
    peak = 2 * clock_hz / 1e6
    written_bad = sum(1 for a, w in zip(p.addrs, p.writes) if w and a in bad_written)
    errors = list(rec["errors"])
    if written_bad:
        errors.append(f"{written_bad} written words differ in the chip model")
    before, after = rec["counters_before"], rec["counters_after"]
    entry = {
        "requests": len(p.addrs), "reads": reads, "writes": len(p.addrs) - reads,
        "bytes": n_bytes, "start_cycle": start, "end_cycle": end,
        "cycles": cycles, "mb_s": mb_s, "percent_of_peak": 100 * mb_s / peak,
        "model_cycles": m_cycles, "model_diff": m_cycles - cycles,
        "model_schedule_exact": exact,
        "refreshes": after["refreshes"] - before["refreshes"],
        "model_refreshes": m_refreshes,
        "row_misses": after["row_misses"] - before["row_misses"],
        "model_row_misses": m_misses,
        "data_ok": rec["error_count"] == 0 and rec["words_checked"] == reads and not written_bad,
        "words_checked": rec["words_checked"] + len(p.addrs) - reads,
        "data_errors": errors,
    }
    target = TARGETS.get(p.name)
    if target is not None:
        entry["target_percent"] = target
        entry["meets_target"] = entry["percent_of_peak"] >= target
    return entry


def run(args) -> dict:
    if args.chip not in ULX3S_CHIPS:
        raise ValueError(f"--chip must be one of {ULX3S_CHIPS}, not {args.chip!r}")
    if args.sim not in SIMULATORS:
        raise ValueError(f"--sim must be one of {SIMULATORS}, not {args.sim!r}")
    if not args.clock_mhz > 0:
        raise ValueError(f"--clock-mhz must be positive, not {args.clock_mhz!r}")
    clock_hz = args.clock_mhz * 1e6
    chip = CHIPS[args.chip]
    timing = worst_case(ULX3S_CHIPS, clock_hz).with_power_up(POWER_UP_CYCLES)
    ready = ready_function(args.rdata_ready)
    names = _selected(args.patterns)
    model = SdramModel(chip, timing, rdata_depth=args.rdata_depth)
    every = build_patterns(chip, bursts=args.bursts,
                           tile_row_bursts=args.tile_row_bursts, tile_stride=args.tile_stride,
                           tile_rows=args.tile_rows, mixed_offset=args.mixed_offset)
    patterns = [every[n] for n in names]
    controller = SdramController(timing, chip, rdata_depth=args.rdata_depth)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        request = Path(tmp) / "request.json"
        request.write_text(json.dumps({
            "timing": dataclasses.asdict(timing), "chip": args.chip, "clock_hz": clock_hz,
            "power_up": POWER_UP_CYCLES, "rdata_depth": args.rdata_depth,
            "addr_bits": controller.addr_bits, "rdata_ready": args.rdata_ready,
            "seed": args.seed, "out": str(out),
            "phases": [{"name": p.name, "addrs": p.addrs, "writes": p.writes}
                       for p in patterns]}))
        saved = dict(os.environ)
        try:
            with stdout_to_stderr():
                run_cocotb(controller, toplevel="sdram_bench",
                           test_module="hetaccel.verify.sdram_bench_tests", sim=args.sim,
                           testcase="sdram_bench", waves=False,
                           extra_env={"HETACCEL_SDRAM_BENCH": str(request)})
        finally:
            os.environ.clear()
            os.environ.update(saved)
        measured = json.loads(out.read_text())
    sim_wall = time.perf_counter() - t0

    # the cycle model on the same requests, presented in the same cycles
    t1 = time.perf_counter()
    requests = []
    for p, rec in zip(patterns, measured["phases"]):
        requests += [Request(a, bool(w), rec["present"]) for a, w in zip(p.addrs, p.writes)]
    sched = model.schedule(requests, rdata_ready=ready, fast=ready is None)
    model_s = time.perf_counter() - t1

    bad_written = set(measured["written_words_bad"])
    result = {"sim": args.sim, "chip": args.chip,
              "controller_timing": "worst case of " + ", ".join(ULX3S_CHIPS),
              "clock_mhz": args.clock_mhz, "peak_mb_s": 2 * clock_hz / 1e6,
              "rdata_ready": args.rdata_ready, "rdata_depth": args.rdata_depth}
    entries, i0 = [], 0
    for p, rec in zip(patterns, measured["phases"]):
        i1 = i0 + len(p.addrs)
        entries.append(_entry(p, rec, sched, i0, i1, clock_hz, bad_written))
        i0 = i1
    for p, entry in zip(patterns, entries):
        result[p.name] = entry
    result.update({
        "correct": all(e["data_ok"] for e in entries)
        and not measured["uninitialised_reads"] and not bad_written,
        "model_exact": all(e["model_schedule_exact"] and e["model_diff"] == 0
                           and e["refreshes"] == e["model_refreshes"]
                           and e["row_misses"] == e["model_row_misses"] for e in entries),
        "uninitialised_reads": measured["uninitialised_reads"],
        "chip_commands": measured["chip_commands"],
        "sim_cycles": measured["cycles"],
        "sim_s": measured["sim_s"],
        "model_s": model_s,
        "wall_s": time.perf_counter() - t0,
        "build_and_sim_s": sim_wall,
    })
    return result

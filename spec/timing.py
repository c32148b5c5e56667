"""Pipeline timing of every unit: the one definition of the device's cycles.

The RTL checks, when it is elaborated, that the pipelines it builds have these
depths; the device model counts its busy cycles with them, and the planner
(:mod:`hetaccel.host.planner`) projects whole workloads from them.  Nothing
here imports Amaranth.

- :func:`array_latency`, :data:`RMW_WINDOW` -- the systolic array and the
  matmul engine's read-modify-write window;
- :func:`tile_cycles`, :func:`row_schedule` -- the engine's exact schedule of a
  tile sequence fed at full rate (weight loads, double buffering, the hazard
  stall, fill and drain);
- :data:`ACTIVATION_LATENCY`, :func:`activation_latency` -- the
  requant/activation pipeline;
- :data:`FP_MUL_LATENCY` ... :func:`adam_latency` -- the fp32 blocks and the
  Adam pipeline built from them;
- :data:`DMA_LEAD`, :data:`DMA_TAIL`, :func:`dma_lines`, :func:`dma_cycles`,
  :func:`spram_cycles` -- LOAD and STORE between the device memory and the
  scratchpads (the SDRAM's own schedule is
  :meth:`hetaccel.sim.sdram_model.SdramModel.transfer_cycles`);
- :func:`instruction_cycles` -- cycles of one compute instruction run on its own;
- :func:`busy_cycles`, :func:`stall_cycles` -- what its unit's busy and stall
  counters count for it.
"""

from __future__ import annotations

import numbers
from typing import Sequence

from .config import AcceleratorConfig
from .codes import Opcode
from .isa import mem_word

__all__ = [
    "array_latency", "RMW_WINDOW", "row_schedule", "tile_cycles", "ACTIVATION_LATENCY",
    "activation_latency", "FP_MUL_LATENCY", "FP_ADD_LATENCY", "FP_SQRT_LATENCY", "FP_DIV_LATENCY",
    "adam_latency", "DMA_LEAD", "DMA_TAIL", "dma_lines", "dma_cycles", "spram_cycles",
    "instruction_overhead", "instruction_cycles", "stall_cycles", "busy_cycles",
]


def _check_config(config) -> AcceleratorConfig:
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
    return config


def array_latency(config: AcceleratorConfig) -> int:
    """Pipeline registers between an accepted activation row and its result.

    The one definition of the array's latency: :class:`hetaccel.rtl.systolic.
    SystolicArray` imports it and checks, when it is elaborated, that the
    pipeline it builds has exactly this many stages.  A row accepted in cycle
    ``c`` is on ``results`` in cycle ``c + latency + 1`` and lands in the
    engine's accumulator memory at the edge ending cycle ``c + latency + 2``.

    ``rows + cols``: the last PE's activation passes one input register and
    ``rows - 2`` skew registers (rows 0 and 1 share one skew, because row 0's
    product register feeds the column directly) and ``cols`` operand
    registers, then its product register and its partial-sum register
    (``1 + rows - 2 + cols + 2`` registers, the first being stage 0; a
    one-row array has no partial-sum register and ``1 + cols`` registers).
    The input register keeps every PE operand register off the path from the
    array's ``acts`` payload (see docs/matmul.md).
    """
    return config.rows + config.cols


RMW_WINDOW = 3
"""Accepted rows whose accumulator sums an accumulating row's read would miss.

The engine reads a row's accumulator row (its read-modify-write) ``L - 1``
cycles after accepting it (``L`` = :func:`array_latency`; two cycles before the row
is on ``results``) and writes the sum at the edge ending cycle ``L + 2`` after
accepting it, with no forwarding between the two.  A row accepted in cycle
``c'`` has therefore landed for a read in cycle ``c + L - 1`` only if
``c' + L + 2 <= c + L - 2``, i.e. ``c - c' >= 4``, for any array shape.  An
accumulating row is held at the engine's ``acts`` input (bubbles) while a row
with its ``acc_addr`` was accepted in the previous ``RMW_WINDOW`` cycles.
:class:`hetaccel.rtl.engine.MatmulEngine` imports this value.
"""


def _tile_fields(tile) -> tuple[int, int | None, bool]:
    # A tile is a row count, or anything with the planner's TileOp fields.
    if all(hasattr(tile, f) for f in ("m", "acc_addr", "accumulate")):
        return int(tile.m), int(tile.acc_addr), bool(tile.accumulate)
    if isinstance(tile, bool) or not isinstance(tile, numbers.Integral):
        raise TypeError(f"a tile is a TileOp or a row count, not {tile!r}")
    return int(tile), None, False


def _schedule(config: AcceleratorConfig, tiles, *, rows_out: list | None = None) -> int:
    """Cycle the last activation row is accepted; appends every row's cycle to ``rows_out``.

    Only the first ``RMW_WINDOW`` rows of a tile can meet the hazard stall:
    later rows follow rows of their own tile, which have other addresses.
    """
    R, L, W = config.rows, array_latency(config), RMW_WINDOW
    le_prev = -1
    ae_hist = [-(10 ** 9), -(10 ** 9)]  # ae[t-2], ae[t-1]
    recent: list[tuple[int, int | None]] = []   # (cycle, acc_addr) of the last W rows accepted
    ae = 0
    for tile in tiles:
        m, base, accumulate = _tile_fields(tile)
        if m < 1:
            raise ValueError(f"every tile needs at least one activation row, got {m}")
        ls = max(le_prev + 1, ae_hist[0] + L + 1)       # bank free: tile t-2 has left
        le = ls + R - 1                                  # one weight row per cycle
        x = max(ae_hist[1] + 1, le + 1)                  # rows in order, weights complete
        for r in range(min(m, W)):
            addr = None if base is None else base + r
            if accumulate and addr is not None:
                for c, a in recent:
                    if a == addr:
                        x = max(x, c + W + 1)            # hazard: wait for its sum to land
            if rows_out is not None:
                rows_out.append(x)
            recent = (recent + [(x, addr)])[-W:]
            x += 1
        ae = x - 1 + max(0, m - W)
        if m > W:
            if rows_out is not None:
                rows_out.extend(range(x, ae + 1))
            recent = [(ae - W + 1 + i, None if base is None else base + m - W + i)
                      for i in range(W)]
        le_prev = le
        ae_hist = [ae_hist[1], ae]
    return ae


def row_schedule(config: AcceleratorConfig, tiles) -> list[int]:
    """The cycle each activation row is accepted, at full rate (see :func:`tile_cycles`).

    ``tiles`` as for :func:`tile_cycles`.  Gaps between consecutive rows of a
    tile are the read-modify-write hazard stall (:data:`RMW_WINDOW`).
    """
    _check_config(config)
    out: list[int] = []
    _schedule(config, list(tiles), rows_out=out)
    return out


def tile_cycles(config: AcceleratorConfig, tile_rows: Sequence, *, engine: bool = True) -> int:
    """Cycles to run a sequence of tiles at full rate.

    Each element of ``tile_rows`` is a :class:`~hetaccel.host.planner.TileOp` (its ``m`` rows go to
    accumulator rows ``acc_addr + r``, added when ``accumulate``) or a plain row
    count (rows that never meet the hazard stall, e.g. overwriting rows).
    Both input streams always hold their next transfer and results are never
    back-pressured.  Counted from the cycle the first weight row is accepted
    (cycle 0) to the cycle the last result is written into the accumulator
    memory (``engine=True``) or leaves ``results`` (``engine=False``),
    inclusive.  With ``ls/le`` the first/last cycle a tile's weights load and
    ``as/ae`` the first/last cycle its activations enter::

        ls[t] = max(le[t-1] + 1, ae[t-2] + L + 1)  # bank free: tile t-2 has left
        le[t] = ls[t] + rows - 1                     # one weight row per cycle
        as[t] = max(ae[t-1] + 1, le[t] + 1)          # weights complete, in order
        row r of tile t: one cycle after row r-1, and an accumulating row no
            earlier than RMW_WINDOW + 1 cycles after any row with its acc_addr
        cycles = ae[-1] + L + 2 (+1 for the accumulator write)

    where ``L = rows + cols``.  When every tile but the last has at least
    ``L + rows = 2*rows + cols`` rows, the loads hide completely and the
    total is ``rows + sum(tile_rows) + L + 1 (+1)``.  Consecutive tiles of a
    :func:`~hetaccel.host.planner.plan_gemm` plan start at least ``rows`` cycles apart (their weight
    loads), so with ``rows > RMW_WINDOW`` the hazard stall never costs a cycle;
    smaller arrays pay it for K-tiles of fewer than ``RMW_WINDOW + 1`` rows.
    """
    _check_config(config)
    tiles = list(tile_rows)
    if not tiles:
        raise ValueError(f"tile_rows must be a non-empty list of tiles, got {tile_rows!r}")
    try:
        ae = _schedule(config, tiles)
    except ValueError as e:
        raise ValueError(f"tile_rows must hold positive row counts or TileOps, got "
                         f"{tile_rows!r}: {e}") from None
    return ae + array_latency(config) + 2 + (1 if engine else 0)


#: Pipeline stages an element passes in the activation unit
#: (:class:`hetaccel.rtl.activation.ActivationUnit`) built with one lane per
#: column: an accepted row's result is on ``out`` this many cycles later.
ACTIVATION_LATENCY = 13


def activation_latency(config: AcceleratorConfig) -> int:
    """Pipeline stages of the activation unit built from ``config``.

    :data:`ACTIVATION_LATENCY` with one lane per column.  A folded unit
    (``config.act_fold > 1``) first holds the accepted row and its parameters
    in a row register, from which one beat of ``act_physical_lanes`` channels a
    cycle enters the lanes: one stage more.  A row accepted in cycle ``c`` is
    then on ``out`` in cycle ``c + act_fold - 1 + activation_latency(config)``,
    and the unit accepts a row every ``act_fold`` cycles.
    """
    _check_config(config)
    return ACTIVATION_LATENCY + (1 if config.act_fold > 1 else 0)

#: Enabled edges from operands to result of the correctly rounded binary32
#: blocks of :mod:`hetaccel.rtl.fp32` (multiply, add, and the square root and
#: divide at the iterations per stage the Adam unit builds them with).
FP_MUL_LATENCY = 6
FP_ADD_LATENCY = 6
FP_SQRT_LATENCY = 28
FP_DIV_LATENCY = 30


def adam_latency() -> int:
    """Advancing cycles of the Adam unit from an accepted input to its output (any lane count).

    The longest chain of its data flow (docs/adam.md): the L2 term, ``v'``,
    the bias-corrected denominator, then the update of ``p``.
    """
    lm, la, ls, ld = FP_MUL_LATENCY, FP_ADD_LATENCY, FP_SQRT_LATENCY, FP_DIV_LATENCY
    t1 = lm + la                    # g1 (L2 term)
    t2 = t1 + 2 * lm + la           # v'
    t3 = t2 + ls + lm + la          # denom
    return t3 + ld + lm + la        # p'


#: Cycles from a LOAD / STORE entry reaching the head of the empty queue to
#: its first request to the device memory: the DMA engine copies the entry,
#: then presents the first line (a LOAD); a STORE reads the scratchpad words
#: that line is made of (the registered read port), assembles them and
#: presents the line from its line register -- 4 for one word and for two
#: 8-byte words packed in the line alike (the second word goes straight into
#: the line register).
DMA_LEAD = {Opcode.LOAD: 2, Opcode.STORE: 4}
#: Cycles from the device memory's last line (read word taken, write's last
#: beat on the pins) to the instruction's retirement.
DMA_TAIL = 2


def dma_lines(config: AcceleratorConfig, fields: dict) -> tuple[int, int]:
    """``(first line, lines)`` of the device memory a LOAD / STORE moves
    (its byte range is line-aligned: :func:`hetaccel.spec.check_instruction`)."""
    line = config.memory.line_bytes
    nbytes = fields["count"] * mem_word(config, fields["space"]).bytes
    return fields["dram_addr"] // line, nbytes // line


def spram_cycles(lines: int, write: bool) -> int:
    """Cycles the SPRAM store takes for ``lines`` consecutive lines: one a
    cycle, plus the read's one cycle of latency."""
    return lines + (0 if write else 1)


def dma_cycles(config: AcceleratorConfig, opcode: int, fields: dict, memory_cycles: int) -> int:
    """Cycles a LOAD / STORE run on its own keeps the DMA engine busy.

    ``memory_cycles`` is what the device memory takes for the transfer's
    lines (:func:`dma_lines`) presented back to back from its first request:
    :meth:`hetaccel.sim.sdram_model.SdramModel.transfer_cycles` for the SDRAM,
    :func:`spram_cycles` for the SPRAM.  The scratchpad side moves one word a
    cycle beside it, so the transfer takes the longer of the two::

        DMA_LEAD[opcode] + max(memory_cycles, count) + DMA_TAIL

    The SDRAM's time depends on its state when the transfer starts (open
    rows, how close the next refresh is); ``transfer_cycles`` starts from
    every bank closed and a refresh just done, so a transfer that meets a
    refresh takes up to ``tRP + tRFC`` plus one row's ACTIVE more
    (docs/device-memory.md).
    """
    _check_config(config)
    return DMA_LEAD[Opcode(opcode)] + max(memory_cycles, fields["count"]) + DMA_TAIL


def _weight_job_lead(config: AcceleratorConfig) -> int:
    # The weight job FIFO (amaranth.lib.fifo.SyncFIFOBuffered, one entry per
    # queue slot) reads its block RAM through a register, so a job written
    # with the queue entry is readable one cycle after the entry is at the
    # queue's head; a one-entry queue's FIFO is a single register, readable
    # with the entry.
    return 0 if config.cmd_queue_depth == 1 else 1


def instruction_overhead(config: AcceleratorConfig, opcode: int) -> int:
    """Cycles a compute instruction run on its own spends in the command
    processor before its first element enters its unit; 0 for other opcodes.

    Counted from the first cycle its entry is in the empty command queue
    (:class:`hetaccel.rtl.command.CommandProcessor`), one cycle per register
    on the way:

    - ACTIVATE (3): the entry is at the queue's head (``q_valid`` is a
      flip-flop) and the executor copies it into its pointers (``ex_ld``);
      ``ex_run``, set once the engine is idle; the first ACC row read
      (registered in the engine's readout stage).
    - ADAM (2): the executor copies the entry; the first OPT word read
      (:class:`~hetaccel.rtl.bram.RegisteredReadPort`).
    - GEMM (3, or 2 with ``cmd_queue_depth == 1``): its weight job reaches the
      weight feeder through a FIFO whose block-RAM read is registered (a
      plain register, no extra cycle, in a one-entry queue); the feeder takes
      the job (``wf_busy``); its first WEIGHT row read
      (:class:`~hetaccel.rtl.bram.RegisteredReadPort`).  The first weight row is
      then on the engine's weight stream: cycle 0 of :func:`tile_cycles`.
    """
    _check_config(config)
    if opcode == Opcode.GEMM:
        return _weight_job_lead(config) + 2
    if opcode == Opcode.ACTIVATE:
        return 3
    if opcode == Opcode.ADAM:
        return 2
    return 0


def instruction_cycles(config: AcceleratorConfig, opcode: int, fields: dict) -> int:
    """Cycles one compute instruction run on its own keeps the device busy.

    ``fields`` are the instruction's decoded fields (``m`` for GEMM and
    ACTIVATE, ``count`` -- OPT words of ``adam_lanes`` parameters -- for ADAM);
    any other opcode takes no compute cycles.  Counted from the first cycle
    the instruction's entry is in the command queue to the cycle its last
    result is written (a GEMM's into the accumulator memory: the engine is
    idle from the next cycle), inclusive: :func:`instruction_overhead`, then
    one element per cycle through its unit's pipeline (a row every
    ``act_fold`` cycles through a folded activation unit)::

        GEMM      overhead + tile_cycles(config, [m])
        ACTIVATE  overhead + m * act_fold + activation_latency(config)
        ADAM      overhead + count + adam_latency()

    The device model's ``CYCLES`` adds this per instruction; the RTL's counts
    every clock cycle, the link's included.  Busy and stall counters:
    :func:`busy_cycles`, :func:`stall_cycles`.

    "On its own" means the queue is empty and the engine idle when its frame
    arrives, e.g. behind a SYNC.  Otherwise the RTL's timing depends on what
    runs before it (``verify/cycles_tests.py`` checks each case on the RTL):

    - A GEMM whose weights the feeder loaded while an earlier instruction ran
      (it was queued behind one and a weight bank was free) issues a row
      every cycle: busy ``m + 1``, no stall.  The weights of a GEMM wait for
      the bank of the GEMM two before it to leave the array (``ls`` in
      :func:`tile_cycles`), so the third of three queued GEMMs can wait.
    - Between two GEMMs the executor retires one, takes the next and issues
      its first row, so their rows meet the engine at least three cycles
      apart.  The read-modify-write hazard stall (:data:`RMW_WINDOW`) then
      holds only the second GEMM's first row, for one cycle, and only when
      it accumulates into the first GEMM's last row: ``GEMM_STALL`` + 1 and,
      with ``m >= 3``, ``GEMM_BUSY`` + 1 -- for any array shape, since
      preloaded weights put no weight load between the two.
    - An ACTIVATE waits at the queue's head until the engine is idle,
      ``array_latency + 3`` cycles after a GEMM's last row entered the array:
      queued before that GEMM retired, it counts ``array_latency + 1`` more
      ``ACT_BUSY`` cycles than on its own.
    - The executor never waits for the front end: a load, store or register
      write that needs a port or rows a queued instruction uses waits instead
      (``HAZARD_WAIT``), and an instruction that finds the queue full waits
      before it is queued (``QUEUE_FULL``); neither changes these counts.

    A whole plan's engine schedule is :func:`row_schedule`.
    """
    _check_config(config)
    lead = instruction_overhead(config, opcode)
    if opcode == Opcode.GEMM:
        return lead + tile_cycles(config, [fields["m"]])
    if opcode == Opcode.ACTIVATE:
        return lead + fields["m"] * config.act_fold + activation_latency(config)
    if opcode == Opcode.ADAM:
        return lead + fields["count"] + adam_latency()
    return 0


def stall_cycles(config: AcceleratorConfig, opcode: int, fields: dict) -> int:
    """What the executing unit's stall counter (``GEMM_STALL``, ``ACT_STALL``,
    ``ADAM_STALL``) counts for one compute instruction run on its own (see
    :func:`instruction_cycles`); 0 for any other opcode.

    A GEMM's rows wait for its weights in the engine.  The executor offers
    its first row two cycles after taking it (the issue register), and the
    engine's skid buffer takes it; the second row, offered a cycle later,
    waits on ``acts`` (counted) until the array takes the first, the cycle
    after the last weight row: ``instruction_overhead + rows - 2`` cycles,
    none for a one-row GEMM.  The activation and Adam units always have their
    output taken, so a unit with one lane per element never stalls its input.
    A folded activation unit (``act_fold > 1``) takes a row every ``act_fold``
    cycles; every row after the first is read ahead and waits ``act_fold - 1``
    of them: ``(m - 1) * (act_fold - 1)``.
    """
    _check_config(config)
    if opcode == Opcode.GEMM and fields["m"] >= 2:
        return instruction_overhead(config, opcode) + config.rows - 2
    if opcode == Opcode.ACTIVATE:
        return max(fields["m"] - 1, 0) * (config.act_fold - 1)
    return 0


def busy_cycles(config: AcceleratorConfig, opcode: int, fields: dict) -> int:
    """What the executing unit's busy counter (``GEMM_BUSY``, ``ACT_BUSY``,
    ``ADAM_BUSY``) counts for one compute instruction run on its own (see
    :func:`instruction_cycles`); 0 for any other opcode.

    - ACTIVATE: counted while it is at the queue's head, all of its
      :func:`instruction_cycles`.
    - ADAM: counted while the executor holds it, from the cycle after its
      entry reached the head: :func:`instruction_cycles` - 1.
    - GEMM: counted while the executor holds it.  The executor issues one
      INPUT row per cycle into the register in front of the engine's
      ``acts`` and retires the GEMM the cycle after the last: ``m + 1``.  It
      does not wait for the array to drain, and its first two rows fit in
      that register and the engine's skid buffer; the third waits until the
      array takes the first (:func:`stall_cycles`), so a GEMM of ``m >= 3``
      rows counts ``m + 1 + stall_cycles``.
    """
    _check_config(config)
    if opcode == Opcode.GEMM:
        m = fields["m"]
        return m + 1 + (stall_cycles(config, opcode, fields) if m >= 3 else 0)
    if opcode == Opcode.ADAM:
        return instruction_cycles(config, opcode, fields) - 1
    return instruction_cycles(config, opcode, fields)

"""The one planner: how work is tiled onto a device, and what it costs.

Every count of cycles or bytes that the runtime, the workloads, the profiler and
the command line quote comes from here, computed for one device image's own
config (array shape, memories, frame size, clock, link rate) with the unit
timings of :mod:`hetaccel.spec.timing` and the framing of :mod:`hetaccel.spec.link`.

Engine level
    :func:`plan_gemm` tiles one product for the matmul engine (:class:`TileOp`
    sequence); :func:`gemm_cycles` is the engine's exact cycle count of it.

Device level
    :func:`plan_device_gemm` blocks a product over the scratchpads
    (:class:`DeviceGemmPlan`); :func:`activation_segments`,
    :func:`adam_segments` and :func:`table_segment` schedule the other
    operations.  A schedule is a sequence of :class:`Segment` made of
    :class:`Load`, :class:`Instr`, :class:`RegWrite`, :class:`RegRead` steps and
    a result :class:`Read`: the runtime (:class:`hetaccel.host.Accelerator`)
    turns exactly these into request frames, attaching the data, and
    :func:`op_cost` counts the very same steps -- every frame's bytes each way,
    each compute instruction's cycles (:func:`~hetaccel.spec.timing.instruction_cycles`,
    what the device's ``CYCLES`` counter adds) and its unit's busy cycles
    (:func:`~hetaccel.spec.timing.busy_cycles`, ``GEMM_BUSY``/``ACT_BUSY``/``ADAM_BUSY``).

Boards
    A :class:`BoardImage` is a named config: ``"config"`` (the config in
    hand) or a board of :data:`hetaccel.spec.boards.BOARDS` with its default
    image (:func:`~hetaccel.spec.boards.default_config`).  :func:`project`
    turns an op's cost into seconds on an image (busy cycles at its clock
    against link bytes at its baud, 10 bits per UART byte), and
    :func:`utilisation` is the one definition of MAC utilisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from ..sim.device_memory_model import DeviceMemoryModel
from ..spec import (ADAM_HYPERPARAMETERS, COUNTERS, DEFAULT_CONFIG, GEMM_ACCUMULATE, INSTRUCTIONS,
                    MEMORY_COUNTERS, AcceleratorConfig, MemSpace, Opcode, mem_depth, mem_word)
from ..spec.boards import BOARDS, default_config
from ..spec.link import frame_bytes
from ..spec.sdram import MODE_BURST_LENGTH
from ..spec.timing import busy_cycles, dma_cycles, dma_lines, instruction_cycles, tile_cycles

__all__ = [
    # engine level
    "TileOp", "OutputBlock", "GemmPlan", "plan_gemm", "gemm_cycles",
    # schedules
    "Load", "Read", "Instr", "RegWrite", "RegRead", "Segment", "write_chunks", "read_chunks",
    "DeviceGemmPlan", "GemmGroup", "GemmChunk", "GemmGrid", "ActGrid", "plan_device_gemm",
    "activation_segments", "adam_segments",
    "table_segment", "PROFILE_COUNTERS", "profile_counters", "profile_segments", "resident_weight_bytes",
    "upload_segments",
    # costs and boards
    "OPS", "OP_UNITS", "OpCost", "count", "gemm_plan_cost", "op_cost", "UART_BITS_PER_BYTE",
    "BoardImage",
    "board_images", "board_image", "Projection", "project", "project_op", "utilisation",
]


def _check_config(config) -> AcceleratorConfig:
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be a hetaccel.spec.AcceleratorConfig, not "
                        f"{type(config).__name__}")
    return config


@dataclass(frozen=True)
class TileOp:
    """One weight tile and the activation rows that use it.

    Weight tile = ``B[k0:k0+rows, n0:n0+cols]`` zero-padded; activation rows
    ``A[m0:m0+m, k0:k0+rows]`` zero-padded, row ``r`` landing in accumulator row
    ``acc_addr + r``, added when ``accumulate`` else overwriting.
    """

    m0: int
    m: int
    k0: int
    n0: int
    acc_addr: int
    accumulate: bool


@dataclass(frozen=True)
class OutputBlock:
    """Result block ``C[m0:m0+m, n0:n0+cols]`` complete after tile ``last_tile``.

    It lives in accumulator rows ``acc_addr .. acc_addr+m-1`` until a later
    block reuses them (no earlier than tile ``last_tile + 1``).
    """

    m0: int
    m: int
    n0: int
    acc_addr: int
    last_tile: int


@dataclass(frozen=True)
class GemmPlan:
    m: int
    k: int
    n: int
    tiles: tuple[TileOp, ...]
    blocks: tuple[OutputBlock, ...]

    @property
    def act_rows(self) -> int:
        return sum(t.m for t in self.tiles)


def plan_gemm(config: AcceleratorConfig, m: int, k: int, n: int, *, acc_base: int = 0,
              acc_rows: int | None = None) -> GemmPlan:
    """Tile ``C[m, n] = A[m, k] @ B[k, n]`` for the engine.

    Order: for each block of at most ``block_m`` rows of A, for each
    ``cols``-wide slice of N, the ``ceil(k / rows)`` K-tiles accumulate into one
    accumulator region.  Two regions alternate (``block_m = acc_rows // 2`` at
    most) so a finished block can be read out while the next one computes.

    Parameters
    ----------
    acc_base, acc_rows : int
        The accumulator rows the plan may use (default: all of them).
    """
    config = _check_config(config)
    for name, v in (("m", m), ("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if k > config.max_k:
        raise ValueError(f"k={k} exceeds the config's max_k={config.max_k}: the accumulator "
                         f"(acc_bits={config.acc_bits}) could wrap; split the reduction on the host")
    if acc_rows is None:
        acc_rows = config.acc_depth - acc_base
    if not (0 <= acc_base and acc_rows >= 1 and acc_base + acc_rows <= config.acc_depth):
        raise ValueError(f"acc_base={acc_base}, acc_rows={acc_rows} outside the accumulator "
                         f"memory of acc_depth={config.acc_depth} rows")
    block_m = min(m, max(1, acc_rows // 2))
    regions = min(2, acc_rows // block_m)
    kt_count = math.ceil(k / config.rows)
    tiles: list[TileOp] = []
    blocks: list[OutputBlock] = []
    for m0 in range(0, m, block_m):
        mm = min(block_m, m - m0)
        for n0 in range(0, n, config.cols):
            addr = acc_base + (len(blocks) % regions) * block_m
            for kt in range(kt_count):
                tiles.append(TileOp(m0=m0, m=mm, k0=kt * config.rows, n0=n0,
                                    acc_addr=addr, accumulate=kt > 0))
            blocks.append(OutputBlock(m0=m0, m=mm, n0=n0, acc_addr=addr,
                                      last_tile=len(tiles) - 1))
    return GemmPlan(m=m, k=k, n=n, tiles=tuple(tiles), blocks=tuple(blocks))


def gemm_cycles(config: AcceleratorConfig, m: int, k: int, n: int, *, engine: bool = True,
                plan: GemmPlan | None = None) -> int:
    """Predicted cycles of ``plan_gemm(config, m, k, n)`` at full rate (see :func:`hetaccel.spec.timing.tile_cycles`)."""
    if plan is None:
        plan = plan_gemm(config, m, k, n)
    return tile_cycles(config, plan.tiles, engine=engine)


# ---------------------------------------------------------------------------
# schedules: the steps the runtime turns into frames


class Load(NamedTuple):
    """WRITE_MEM of ``words`` words of ``space`` from word ``addr`` on, in
    frames of :func:`write_chunks` words.  ``part`` names the slice of the
    operation's data (each schedule documents its parts)."""

    space: MemSpace
    addr: int
    words: int
    part: tuple = ()


class Read(NamedTuple):
    """READ_MEM of ``words`` words of ``space`` from word ``addr`` on, in
    frames of :func:`read_chunks` words."""

    space: MemSpace
    addr: int
    words: int


class Instr(NamedTuple):
    """One fixed-layout instruction; ``fields`` in :data:`~hetaccel.spec.INSTRUCTIONS` order."""

    opcode: Opcode
    fields: tuple = ()


class RegWrite(NamedTuple):
    """One WRITE_REG frame writing the named registers."""

    regs: tuple


class RegRead(NamedTuple):
    """One READ_REG frame reading the named registers."""

    regs: tuple


class Segment(NamedTuple):
    """Steps the device runs together and the read-back of their result.

    The runtime sends a segment's read with the *next* segment's steps, so
    results stream out while the next compute runs (double buffering).
    ``key`` tells the runtime which part of the result the read returns.
    """

    steps: tuple
    read: Read | None = None
    key: tuple = ()


#: Bytes of one register value in a READ_REG reply.
_REG_BYTES = 4


def write_chunks(config: AcceleratorConfig, space: MemSpace, words: int) -> list[int]:
    """Words per WRITE_MEM frame loading ``words`` words of ``space``: as many
    as one payload of ``max_payload`` bytes holds after the fixed fields."""
    per = max(1, (config.max_payload - INSTRUCTIONS[Opcode.WRITE_MEM].fixed_bytes)
              // mem_word(config, space).bytes)
    return [min(per, words - i) for i in range(0, words, per)]


def read_chunks(config: AcceleratorConfig, space: MemSpace, words: int) -> list[int]:
    """Words per READ_MEM frame reading ``words`` words of ``space``: as many as
    one reply payload holds (and the 16-bit ``count`` field allows)."""
    count_max = (1 << (8 * dict(INSTRUCTIONS[Opcode.READ_MEM].fields)["count"])) - 1
    per = max(1, min(count_max, config.max_payload // mem_word(config, space).bytes))
    return [min(per, words - i) for i in range(0, words, per)]


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


@dataclass(frozen=True)
class DeviceGemmPlan:
    """How one ``C[M, N] = A[M, K] @ B[K, N]`` runs on a device.

    ``A`` is cut into row blocks of ``mb`` rows and ``N`` into groups of
    ``nb`` column tiles (``cols`` wide, ``NT`` in all); a block and a group
    form one accumulator region (two regions alternate, so one is read out
    while the other computes).  The ``KT = ceil(K / rows)`` K-tiles are loaded
    in chunks of ``kc`` tiles of the block's activations and the group's
    weights, each into one half of INPUT / WEIGHT.  When all K-tiles fit at
    once (``resident``) a row block's activations are loaded once for all its
    groups.  ``linear`` adds the activation unit: a group's ACT_PARAM words,
    an ACTIVATE per column tile and the read of OUTPUT instead of ACC.

    :meth:`segments` is the schedule; its :class:`Load` parts are
    ``("a", t0, tt, m0, mm)`` (K-tiles ``t0 .. t0+tt-1`` of rows ``m0 ..
    m0+mm-1`` of A, one INPUT word per tile row), ``("w", t0, tt, n0, nn)``
    (K-tiles of column tiles ``n0 .. n0+nn-1`` of B, ``rows`` WEIGHT words
    each) and ``("params", n0, nn)`` (ACT_PARAM words of those column tiles);
    a segment's key is ``(m0, mm, n0, nn)``: its read returns ``nn`` runs of
    ``mm`` rows, one per column tile.

    ``weights_at`` (a device-memory byte address, or None) says ``B`` is
    resident there in the layout of :func:`resident_weight_bytes`: the
    weights then come from device memory by LOAD (one per K-tile of a chunk)
    instead of crossing the link.
    """

    config: AcceleratorConfig
    M: int
    K: int
    N: int
    KT: int
    NT: int
    mb: int
    nb: int
    kc: int
    resident: bool
    linear: bool
    weights_at: int | None = None

    def groups(self, function: int = 0, flags: int = 0) -> Iterator["GemmGroup"]:
        """The schedule in closed form: one :class:`GemmGroup` per (row
        block, column group), in order.  :meth:`segments` expands each into
        its steps; the emulator's bulk path and :func:`op_cost` take them as
        they are (a MiniLM run has millions of steps, a few hundred groups).

        ``function`` and ``flags`` are the ACTIVATE fields of a linear plan.
        """
        cfg = self.config
        KT, NT, M, mb, nb = self.KT, self.NT, self.M, self.mb, self.nb
        in_half = cfg.input_depth // 2
        acc_half = cfg.acc_depth // 2
        out_half = cfg.output_depth // 2
        # Two halves alternate so a group's parameters load while the one
        # before still activates; a one-entry memory has a single half (the
        # device's hazard checks hold the load until that ACTIVATE is done).
        param_half = cfg.act_param_depth // 2
        n_chunks = _ceil(KT, self.kc)
        chunk0 = 0
        group_no = 0
        for m0 in range(0, M, mb):
            mm = min(mb, M - m0)
            # resident activations: one INPUT half per row block, loaded by its first group
            a_base = (m0 // mb) % 2 * in_half if self.resident else 0
            for n0 in range(0, NT, nb):
                nn = min(nb, NT - n0)
                half = group_no % 2
                region = half * acc_half
                a_load = (Load(MemSpace.INPUT, a_base, KT * mm, ("a", 0, KT, m0, mm))
                          if self.resident and n0 == 0 else None)
                p_base, out_base = half * param_half, half * out_half
                if self.linear:
                    params = Load(MemSpace.ACT_PARAM, p_base, nn, ("params", n0, nn))
                    read = Read(MemSpace.OUTPUT, out_base, nn * mm)
                else:
                    params = None
                    read = Read(MemSpace.ACC, region, nn * mm)
                yield GemmGroup(self, m0, mm, n0, nn, region, a_load, params, chunk0, a_base,
                                out_base, p_base, function, flags, read)
                chunk0 += n_chunks
                group_no += 1

    def segments(self, function: int = 0, flags: int = 0) -> Iterator[Segment]:
        """The schedule, one segment per (row block, column group): every
        step of :meth:`groups`, one instruction per tile.

        ``function`` and ``flags`` are the ACTIVATE fields of a linear plan.
        """
        for g in self.groups(function, flags):
            yield g.segment()


class GemmChunk(NamedTuple):
    """K-tiles ``t0 .. t0+tt-1`` of a :class:`GemmGroup`, loaded together:
    their weights at WEIGHT row ``w_base``, their activations at INPUT
    word ``a_base``."""

    t0: int
    tt: int
    w_base: int
    a_base: int


class GemmGrid(NamedTuple):
    """The GEMMs of one chunk: for ``t < kt``, ``j < nt``, in that order::

        GEMM(a_addr + t*m, w_addr + (t*nt + j)*rows, acc_addr + j*m, m,
             ACCUMULATE if t > 0 or accumulate else 0)

    (the grid :meth:`hetaccel.sim.device_model.DeviceModel.bulk_gemm` takes)."""

    a_addr: int
    w_addr: int
    acc_addr: int
    m: int
    kt: int
    nt: int
    accumulate: bool

    def instruction(self, rows: int, t: int, j: int) -> Instr:
        m = self.m
        return Instr(Opcode.GEMM, (self.a_addr + t * m, self.w_addr + (t * self.nt + j) * rows,
                                   self.acc_addr + j * m, m,
                                   GEMM_ACCUMULATE if t > 0 or self.accumulate else 0))

    def instructions(self, rows: int) -> list:
        return [self.instruction(rows, t, j) for t in range(self.kt) for j in range(self.nt)]


class ActGrid(NamedTuple):
    """The ACTIVATEs of a linear group: for ``j < n``::

        ACTIVATE(acc_addr + j*m, out_addr + j*m, m, param_entry + j, function, flags)

    (the grid :meth:`hetaccel.sim.device_model.DeviceModel.bulk_activate` takes)."""

    acc_addr: int
    out_addr: int
    m: int
    param_entry: int
    n: int
    function: int
    flags: int

    def instruction(self, j: int) -> Instr:
        m = self.m
        return Instr(Opcode.ACTIVATE, (self.acc_addr + j * m, self.out_addr + j * m, m,
                                       self.param_entry + j, self.function, self.flags))

    def instructions(self) -> list:
        return [self.instruction(j) for j in range(self.n)]


class GemmGroup(NamedTuple):
    """One segment of a :class:`DeviceGemmPlan` in closed form: rows ``m0 ..
    m0+mm-1`` of A times column tiles ``n0 .. n0+nn-1`` of B, into ACC rows
    ``region ..`` (``nn`` runs of ``mm`` rows, one per column tile).

    Its steps (:meth:`steps`): the row block's resident activations
    (``a_load``, in the block's first group), the ACT_PARAM words
    (``params``), then for each of its :meth:`chunk` s the weights
    (:meth:`weight_steps`: a WEIGHT load, or LOADs from device memory), the
    activations (:meth:`input_load`, unless resident: then at ``a_base`` on)
    and the GEMMs (:meth:`grid`), then the ACTIVATEs (:meth:`act_grid`,
    OUTPUT rows ``out_base ..``, parameter entries ``p_base ..``).  ``chunk0``
    is the op-wide number of its first chunk: chunks alternate between the
    halves of INPUT and WEIGHT across the whole op.  ``read`` is its
    read-back.
    """

    plan: DeviceGemmPlan
    m0: int
    mm: int
    n0: int
    nn: int
    region: int
    a_load: Load | None
    params: Load | None
    chunk0: int
    a_base: int
    out_base: int
    p_base: int
    function: int
    flags: int
    read: Read

    @property
    def key(self) -> tuple:
        """The segment's key: which part of the result its read returns."""
        return (self.m0, self.mm, self.n0, self.nn)

    @property
    def n_chunks(self) -> int:
        return _ceil(self.plan.KT, self.plan.kc)

    def chunk(self, i: int) -> GemmChunk:
        """Chunk ``i`` (of :attr:`n_chunks`): ``kc`` K-tiles, the last maybe fewer."""
        p = self.plan
        cfg = p.config
        half = (self.chunk0 + i) % 2
        w_half = _w_half(cfg)
        t0 = i * p.kc
        a_base = self.a_base + t0 * self.mm if p.resident else half * (cfg.input_depth // 2)
        return GemmChunk(t0, min(p.kc, p.KT - t0), (half % (cfg.weight_depth // w_half)) * w_half,
                         a_base)

    def chunk_kinds(self) -> list[tuple[GemmChunk, int]]:
        """``(chunk, count)``: the chunks grouped by the frames they send
        (their K-tiles' data and resident weights' addresses apart), each kind
        by its first chunk.  Closed form: the first chunk does not accumulate,
        all but the last have ``kc`` tiles, and the halves alternate."""
        n = self.n_chunks
        kinds: dict = {}
        middle = max(0, n - 2)                     # chunks 1 .. n-2, halves alternating
        for i, count in ((0, 1), (1, (middle + 1) // 2), (2, middle // 2),
                         (n - 1, 1 if n >= 2 else 0)):
            if count > 0:
                c = self.chunk(i)
                k = (c.tt, c.w_base, c.a_base, c.t0 > 0)
                first, have = kinds.get(k, (c, 0))
                kinds[k] = (first if first.t0 <= c.t0 else c, have + count)
        return list(kinds.values())

    def lasting_chunks(self) -> range:
        """The chunks whose loads may leave words in INPUT and WEIGHT after
        the group: chunks alternate between two halves, so a chunk's words
        are rewritten by the chunk two on unless that is the last (maybe
        shorter) one -- only the last four can."""
        n = self.n_chunks
        return range(max(0, n - 4), n)

    def weight_steps(self, c: GemmChunk) -> tuple:
        """The chunk's weights: one WEIGHT load, or with resident weights
        (``plan.weights_at``) LOADs from device memory -- one for the chunk
        when the group is every column tile (its K-tiles are consecutive in
        the layout of :func:`resident_weight_bytes`), else one per K-tile."""
        p = self.plan
        R, nn = p.config.rows, self.nn
        if p.weights_at is None:
            return (Load(MemSpace.WEIGHT, c.w_base, c.tt * nn * R, ("w", c.t0, c.tt, self.n0, nn)),)
        wtile = R * mem_word(p.config, MemSpace.WEIGHT).bytes
        if nn == p.NT:
            return (Instr(Opcode.LOAD, (int(MemSpace.WEIGHT), c.w_base,
                                        p.weights_at + c.t0 * p.NT * wtile, c.tt * nn * R)),)
        return tuple(Instr(Opcode.LOAD, (int(MemSpace.WEIGHT), c.w_base + t * nn * R,
                                         p.weights_at + ((c.t0 + t) * p.NT + self.n0) * wtile,
                                         nn * R))
                     for t in range(c.tt))

    def input_load(self, c: GemmChunk) -> Load | None:
        """The chunk's activations (None when the row block's are resident)."""
        if self.plan.resident:
            return None
        return Load(MemSpace.INPUT, c.a_base, c.tt * self.mm, ("a", c.t0, c.tt, self.m0, self.mm))

    def grid(self, c: GemmChunk) -> GemmGrid:
        """The chunk's GEMMs; the group's first overwrites the region."""
        return GemmGrid(c.a_base, c.w_base, self.region, self.mm, c.tt, self.nn, c.t0 > 0)

    def act_grid(self) -> ActGrid | None:
        """The ACTIVATEs of a linear plan's group (None for a matmul)."""
        if not self.plan.linear:
            return None
        return ActGrid(self.region, self.out_base, self.mm, self.p_base, self.nn,
                       self.function, self.flags)

    def steps(self) -> tuple:
        """Every step, one instruction per tile."""
        R = self.plan.config.rows
        steps: list = [s for s in (self.a_load, self.params) if s is not None]
        for i in range(self.n_chunks):
            c = self.chunk(i)
            steps += self.weight_steps(c)
            a = self.input_load(c)
            if a is not None:
                steps.append(a)
            steps += self.grid(c).instructions(R)
        act = self.act_grid()
        if act is not None:
            steps += act.instructions()
        return tuple(steps)

    def segment(self) -> Segment:
        return Segment(self.steps(), self.read, self.key)

    def tally(self) -> Iterator[tuple]:
        """``(step, times)``: :meth:`steps` and the read as a multiset of
        steps that cost the same -- a Load's cost is its space and size, a
        GEMM's or ACTIVATE's its rows (:mod:`hetaccel.spec.timing`) -- so
        :func:`op_cost` counts a group in closed form.  A LOAD's cycles depend
        on its device-memory lines: every one is listed."""
        p = self.plan
        R = p.config.rows
        for s in (self.a_load, self.params):
            if s is not None:
                yield s, 1
        kinds = self.chunk_kinds()
        for c, n in kinds:
            if p.weights_at is None:
                yield self.weight_steps(c)[0], n
            a = self.input_load(c)
            if a is not None:
                yield a, n
        if p.weights_at is not None:
            for i in range(self.n_chunks):
                for s in self.weight_steps(self.chunk(i)):
                    yield s, 1
        first = self.grid(self.chunk(0))
        yield first.instruction(R, 0, 0), self.nn
        if p.KT > 1:
            acc = first.instruction(R, 1, 0) if first.kt > 1 else \
                self.grid(self.chunk(1)).instruction(R, 0, 0)
            yield acc, (p.KT - 1) * self.nn
        act = self.act_grid()
        if act is not None:
            yield act.instruction(0), self.nn
        yield self.read, 1


def _check_dims(**dims) -> None:
    for name, v in dims.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def resident_weight_bytes(config: AcceleratorConfig, k: int, n: int) -> int:
    """Device-memory bytes of a resident ``(k, n)`` right operand.

    The layout: ``B`` zero-padded to whole ``rows x cols`` tiles, tile
    ``(t, j)`` (K-tile ``t``, column tile ``j``) at tile index ``t * NT + j``,
    each tile ``rows`` WEIGHT words (:func:`~hetaccel.spec.pack_words`).  A
    tile must be a whole number of device-memory lines (ValueError if not).
    """
    cfg = _check_config(config)
    _check_dims(k=k, n=n)
    if cfg.memory is None:
        raise ValueError("this config has no device memory (device_memory='none')")
    wtile = cfg.rows * mem_word(cfg, MemSpace.WEIGHT).bytes
    if wtile % cfg.memory.line_bytes:
        raise ValueError(f"a {cfg.rows}x{cfg.cols} weight tile is {wtile} bytes, not a whole "
                         f"number of {cfg.memory.line_bytes}-byte {cfg.device_memory} lines")
    return _ceil(int(k), cfg.rows) * _ceil(int(n), cfg.cols) * wtile


def upload_segments(config: AcceleratorConfig, dram_addr: int, nbytes: int) -> Iterator[Segment]:
    """The upload of ``nbytes`` (whole lines) to device memory from byte
    ``dram_addr``: WRITE_MEM of DEVICE lines, part ``("upload",)``."""
    cfg = _check_config(config)
    line = cfg.memory.line_bytes
    if dram_addr % line or nbytes % line or nbytes <= 0:
        raise ValueError(f"an upload covers whole {line}-byte lines, not bytes "
                         f"[{dram_addr}, {dram_addr + nbytes})")
    yield Segment((Load(MemSpace.DEVICE, dram_addr // line, nbytes // line, ("upload",)),))


def plan_device_gemm(config: AcceleratorConfig, m: int, k: int, n: int, *,
                     linear: bool = False, weights_at: int | None = None) -> DeviceGemmPlan:
    """The block sizes that minimise link bytes (frames included) within the scratchpads.

    Every ``mb`` (powers of two and the largest that fits) and ``nb`` is tried:
    ``kc`` is then the most K-tiles that fit, evened out over the chunks, and
    the cost is the operand bytes (activations reloaded per group unless
    resident, weights per row block) plus 30 bytes per frame.  ``linear``
    also keeps a region within half of OUTPUT and a group within half of
    ACT_PARAM.  Any ``k <= config.max_k`` is planned (longer reductions could
    wrap the accumulators: the caller splits them).  With ``weights_at`` (B
    resident in device memory at that byte) the weights cost no link bytes,
    one LOAD frame per K-tile and group instead.
    """
    cfg = _check_config(config)
    _check_dims(m=m, k=k, n=n)
    m, k, n = int(m), int(k), int(n)
    if k > cfg.max_k:
        raise ValueError(f"reduction length k={k} exceeds the config's max_k={cfg.max_k}: the "
                         f"{cfg.acc_bits}-bit accumulators could wrap")
    if linear and not cfg.has_activation:
        raise ValueError("this config has no activation unit (has_activation=False)")
    R, C = cfg.rows, cfg.cols
    KT, NT = _ceil(k, R), _ceil(n, C)
    in_half, w_half, acc_half = cfg.input_depth // 2, _w_half(cfg), cfg.acc_depth // 2
    mem_vs_link = 0.0
    if weights_at is not None and cfg.memory is not None:
        mem_vs_link = (cfg.baud / UART_BITS_PER_BYTE) / _memory_bytes_per_s(cfg)
    nb_cap = NT
    if linear:
        acc_half = min(acc_half, cfg.output_depth // 2)
        nb_cap = min(nb_cap, max(1, cfg.act_param_depth // 2))
    best = None
    for mb in _candidates(min(m, acc_half, in_half)):
        for nb in _candidates(min(nb_cap, max(1, acc_half // mb))):
            kc = min(KT, in_half // mb, w_half // (nb * R))
            if kc < 1:
                continue
            kc = _ceil(KT, _ceil(KT, kc))  # equal chunks
            resident = kc == KT
            mblocks, ngroups = _ceil(m, mb), _ceil(NT, nb)
            a_bytes = m * KT * R * (1 if resident else ngroups)
            w_bytes = KT * R * NT * C * mblocks
            gemms = mblocks * NT * KT
            w_cost = w_bytes
            if weights_at is not None:
                # the LOAD frames: one a chunk when a group is every column tile
                gemms += mblocks * ngroups * (_ceil(KT, kc) if nb >= NT else KT)
                # device-memory bytes, in link bytes of the same time
                w_cost, w_bytes = w_bytes * mem_vs_link, 0
            frames = gemms + (a_bytes + w_bytes) // max(1, cfg.max_payload - 5)
            frames += mblocks * ngroups * (3 + (nb if linear else 0))
            cost = a_bytes + w_cost + 30 * frames
            if best is None or cost < best[0]:
                best = (cost, (mb, nb, kc, resident))
    if best is None:
        raise ValueError(f"the config's scratchpads cannot hold one tile: input_depth="
                         f"{cfg.input_depth}, weight_depth={cfg.weight_depth}, "
                         f"rows={R}")  # pragma: no cover - config validation prevents it
    mb, nb, kc, resident = best[1]
    if weights_at is not None:
        resident_weight_bytes(cfg, k, n)        # the layout exists on this config
    return DeviceGemmPlan(cfg, m, k, n, KT, NT, mb, nb, kc, resident, linear, weights_at)


def activation_segments(config: AcceleratorConfig, elements: int, *, function: int = 0,
                        flags: int = 0) -> Iterator[Segment]:
    """The activation unit alone on ``elements`` accumulator values.

    One ACT_PARAM word (part ``("params",)``), then passes of at most half of
    ACC / OUTPUT: part ``("acc", r0, rr)`` is rows ``r0 .. r0+rr-1`` of the
    values laid out ``cols`` per ACC word; the key is ``(r0, rr)``.
    """
    cfg = _check_config(config)
    _check_dims(elements=elements)
    if not cfg.has_activation:
        raise ValueError("this config has no activation unit (has_activation=False)")
    rows = _ceil(int(elements), cfg.cols)
    half = min(cfg.acc_depth, cfg.output_depth) // 2
    yield Segment((Load(MemSpace.ACT_PARAM, 0, 1, ("params",)),))
    for i, r0 in enumerate(range(0, rows, half)):
        rr = min(half, rows - r0)
        base = (i % 2) * half
        yield Segment((Load(MemSpace.ACC, base, rr, ("acc", r0, rr)),
                       Instr(Opcode.ACTIVATE, (base, base, rr, 0, function, flags))),
                      Read(MemSpace.OUTPUT, base, rr), (r0, rr))


#: The registers an Adam step writes before its passes.
_ADAM_REGS = tuple(f"ADAM_{k.upper()}" for k in ADAM_HYPERPARAMETERS) + ("ADAM_MODE",)


def adam_segments(config: AcceleratorConfig, params: int) -> Iterator[Segment]:
    """One Adam step over ``params`` parameters.

    The hyperparameter registers, then passes of at most half of OPT: part
    ``("opt", w0, ww)`` is OPT words ``w0 .. w0+ww-1`` (``adam_lanes``
    parameters each); the key is ``(w0, ww)``.
    """
    cfg = _check_config(config)
    _check_dims(params=params)
    if not cfg.has_adam:
        raise ValueError("this config has no Adam unit (has_adam=False)")
    words = _ceil(int(params), cfg.adam_lanes)
    half = max(1, mem_depth(cfg, MemSpace.OPT) // 2)
    yield Segment((RegWrite(_ADAM_REGS),))
    for i, w0 in enumerate(range(0, words, half)):
        ww = min(half, words - w0)
        base = (i % 2) * half
        yield Segment((Load(MemSpace.OPT, base, ww, ("opt", w0, ww)),
                       Instr(Opcode.ADAM, (base, ww))),
                      Read(MemSpace.OPT, base, ww), (w0, ww))


#: Entries of one activation table.
_TABLE_WORDS = 256


def table_segment(config: AcceleratorConfig, slot: int) -> Segment:
    """The load of one activation table into its slot (part ``("table",)``)."""
    return Segment((Load(MemSpace.TABLE, slot * _TABLE_WORDS, _TABLE_WORDS, ("table",)),))


#: The counters the profiler reads before and after every operation.
PROFILE_COUNTERS = tuple(name for name, _ in COUNTERS)


def profile_counters(config: AcceleratorConfig | None = None) -> tuple[str, ...]:
    """:data:`PROFILE_COUNTERS`, and the DMA counters on a config with device memory."""
    if config is not None and config.memory is not None:
        return PROFILE_COUNTERS + tuple(name for name, _ in MEMORY_COUNTERS)
    return PROFILE_COUNTERS


def profile_segments(config: AcceleratorConfig | None = None) -> tuple[Segment, ...]:
    """What the profiler adds around every operation: the counters before, then
    a SYNC (every queued instruction retired) and the counters after."""
    names = profile_counters(config)
    return (Segment((RegRead(names),)), Segment((Instr(Opcode.SYNC),)),
            Segment((RegRead(names),)))


# ---------------------------------------------------------------------------
# costs

#: The runtime's operations and the units each one needs.
OP_UNITS = {"matmul": ("gemm",), "linear": ("gemm", "activation"),
            "activation": ("activation",), "adam_step": ("adam",), "upload": ("memory",)}
OPS = tuple(OP_UNITS)

_UNIT_OF = {Opcode.GEMM: "gemm", Opcode.ACTIVATE: "activation", Opcode.ADAM: "adam"}


@dataclass(frozen=True)
class OpCost:
    """What one operation costs on one config.

    ``cycles`` sums each compute instruction's :func:`~hetaccel.spec.timing.instruction_cycles`
    (what the device's ``CYCLES`` counter adds); ``busy`` holds each unit's
    :func:`~hetaccel.spec.timing.busy_cycles` (``GEMM_BUSY``, ``ACT_BUSY``,
    ``ADAM_BUSY``); ``bytes_in`` / ``bytes_out`` are the request / reply frame
    bytes on the link, every header and CRC included; ``frames`` the requests.
    ``dma_cycles`` are the LOAD / STORE instructions' cycles on the DMA engine
    (``DMA_BUSY``; :func:`~hetaccel.spec.timing.dma_cycles`, the SDRAM's own
    schedule inside), which runs beside the compute units, and ``dram_bytes``
    the bytes they move.
    """

    op: str
    macs: int
    cycles: int
    busy: dict
    bytes_in: int
    bytes_out: int
    frames: int
    instructions: dict
    dma_cycles: int = 0
    dram_bytes: int = 0

    @property
    def busy_cycles(self) -> int:
        return sum(self.busy.values())

    def as_dict(self) -> dict:
        return {"op": self.op, "macs": self.macs, "cycles": self.cycles,
                "busy": dict(self.busy), "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "frames": self.frames,
                "instructions": dict(self.instructions), "dma_cycles": self.dma_cycles,
                "dram_bytes": self.dram_bytes}


class _Tally:
    """Frames, bytes and cycles of schedule steps as the runtime sends them:
    :func:`count` adds a schedule step by step, :func:`op_cost` a GEMM plan
    group by group (:meth:`GemmGroup.tally`)."""

    _NAMES = {op_: tuple(n for n, _ in fmt.fields) for op_, fmt in INSTRUCTIONS.items()}
    _FIXED = {op_: fmt.fixed_bytes for op_, fmt in INSTRUCTIONS.items()}

    def __init__(self, cfg: AcceleratorConfig):
        self.cfg = cfg
        self.b_in = self.b_out = self.frames = self.cycles = self.dma = self.dram = 0
        self.busy = {"gemm": 0, "activation": 0, "adam": 0}
        self.instr: dict = {}
        self._costs: dict = {}

    def add(self, s, times: int = 1) -> None:
        """``times`` of step ``s`` (an Instr, Load, Read, RegWrite or RegRead)."""
        kind = type(s)
        key = s if kind is not Load else (Load, s.space, s.words)
        c = self._costs.get(key)
        if c is None:
            c = self._costs[key] = self._cost(s)
        name, frames, b_in, b_out, cycles, unit, busy, dma, dram = c
        self.instr[name] = self.instr.get(name, 0) + times * frames
        self.frames += times * frames
        self.b_in += times * b_in
        self.b_out += times * b_out
        if cycles:
            self.cycles += times * cycles
            if unit is not None:
                self.busy[unit] += times * busy
            self.dma += times * dma
            self.dram += times * dram

    def _cost(self, s) -> tuple:
        """``(instruction name, frames, bytes in, bytes out, cycles, unit,
        unit busy cycles, DMA cycles, device-memory bytes)`` of one step."""
        cfg, fixed = self.cfg, self._FIXED
        ack = frame_bytes(0)
        if isinstance(s, Instr):
            unit = _UNIT_OF.get(s.opcode)
            cycles = busy = dma = dram = 0
            if unit is not None:
                f = dict(zip(self._NAMES[s.opcode], s.fields))
                cycles, busy = instruction_cycles(cfg, s.opcode, f), busy_cycles(cfg, s.opcode, f)
            elif s.opcode in (Opcode.LOAD, Opcode.STORE):
                f = dict(zip(self._NAMES[s.opcode], s.fields))
                first, lines = dma_lines(cfg, f)
                mem = _memory_model(cfg).transfer_cycles(first, lines, s.opcode == Opcode.STORE)
                cycles = dma = dma_cycles(cfg, s.opcode, f, mem)
                dram = lines * cfg.memory.line_bytes
            return (s.opcode.name, 1, frame_bytes(fixed[s.opcode]), ack, cycles, unit, busy,
                    dma, dram)
        if isinstance(s, Load):
            wb = mem_word(cfg, s.space).bytes
            chunks = write_chunks(cfg, s.space, s.words)
            return ("WRITE_MEM", len(chunks),
                    sum(frame_bytes(fixed[Opcode.WRITE_MEM] + w * wb) for w in chunks),
                    len(chunks) * ack, 0, None, 0, 0, 0)
        if isinstance(s, Read):
            wb = mem_word(cfg, s.space).bytes
            chunks = read_chunks(cfg, s.space, s.words)
            return ("READ_MEM", len(chunks), len(chunks) * frame_bytes(fixed[Opcode.READ_MEM]),
                    sum(frame_bytes(w * wb) for w in chunks), 0, None, 0, 0, 0)
        if isinstance(s, RegWrite):
            return ("WRITE_REG", 1, frame_bytes(fixed[Opcode.WRITE_REG] * len(s.regs)), ack,
                    0, None, 0, 0, 0)
        if isinstance(s, RegRead):
            return ("READ_REG", 1, frame_bytes(fixed[Opcode.READ_REG] * len(s.regs)),
                    frame_bytes(_REG_BYTES * len(s.regs)), 0, None, 0, 0, 0)
        raise TypeError(f"not a schedule step: {s!r}")

    def add_segments(self, segments: Iterable[Segment]) -> None:
        for seg in segments:
            for s in seg.steps:
                self.add(s)
            if seg.read is not None:
                self.add(seg.read)

    def add_plan(self, plan: DeviceGemmPlan) -> None:
        """A GEMM plan's segments in closed form: groups of one shape (rows,
        column tiles, whether they load the row block) cost the same, but for
        resident weights, whose LOADs' cycles depend on where their column
        tiles lie in device memory."""
        shapes: dict = {}
        resident = plan.weights_at is not None
        for g in plan.groups():
            key = (g.mm, g.nn, g.a_load is not None, g.n0 if resident else None)
            seen = shapes.get(key)
            if seen is None:
                shapes[key] = [g, 1]
            else:
                seen[1] += 1
        for g, n in shapes.values():
            for s, times in g.tally():
                self.add(s, times * n)

    def cost(self, op: str, macs: int) -> OpCost:
        return OpCost(op=op, macs=macs, cycles=self.cycles, busy=dict(self.busy),
                      bytes_in=self.b_in, bytes_out=self.b_out, frames=self.frames,
                      instructions=dict(self.instr), dma_cycles=self.dma, dram_bytes=self.dram)


def count(config: AcceleratorConfig, segments: Iterable[Segment], *, op: str = "",
          macs: int = 0) -> OpCost:
    """Frames, bytes and cycles of a schedule, step by step as the runtime sends it."""
    tally = _Tally(_check_config(config))
    tally.add_segments(segments)
    return tally.cost(op, macs)


def gemm_plan_cost(plan: DeviceGemmPlan, *, op: str = "", macs: int = 0) -> OpCost:
    """:func:`count` of ``plan.segments()`` in closed form, group by group
    (:meth:`GemmGroup.tally`); tests/test_planner.py holds the two equal."""
    tally = _Tally(plan.config)
    tally.add_plan(plan)
    return tally.cost(op, macs)


def _memory_bytes_per_s(cfg: AcceleratorConfig) -> float:
    """The device memory's peak rate: an SDRAM line is one burst, a beat a cycle."""
    per_cycle = cfg.memory.line_bytes / (MODE_BURST_LENGTH if cfg.memory.kind == "sdram" else 1)
    return per_cycle * cfg.clock_hz


@lru_cache(maxsize=16)
def _memory_model(cfg: AcceleratorConfig) -> DeviceMemoryModel:
    # timing only: the model's store is allocated on first use, never here
    return DeviceMemoryModel(cfg)


def _shape_of(op: str, shape) -> tuple:
    if op not in OP_UNITS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
    keys = {"matmul": ("m", "k", "n"), "linear": ("m", "k", "n"),
            "activation": ("elements",), "adam_step": ("params",), "upload": ("bytes",)}[op]
    missing = [k for k in keys if k not in shape]
    if missing:
        raise ValueError(f"{op} needs shape keys {list(keys)}, got {dict(shape)!r}")
    _check_dims(**{k: shape[k] for k in keys})
    return tuple(int(shape[k]) for k in keys)


def op_cost(config: AcceleratorConfig, op: str, shape: dict, *, table: bool = False,
            profiled: bool = True, resident: bool = False) -> OpCost:
    """The cost of the runtime operation ``op`` (``"matmul"``, ``"linear"``,
    ``"activation"``, ``"adam_step"``, ``"upload"``) of ``shape`` (``m``, ``k``,
    ``n`` for the first two, ``elements``, ``params``, ``bytes``) on ``config``.

    ``resident``: a matmul's or linear's weights are resident in device
    memory (uploaded before; ValueError on a config without device memory).

    ``table``: the operation first loads an activation table (the runtime does
    when the slot does not hold it yet).  ``profiled``: include the profiler's
    counter reads and SYNC around it (:func:`profile_segments`), which the
    runtime sends with every operation.  Raises ValueError for a shape the
    runtime refuses on this config (``k > max_k``, a unit the config lacks).
    """
    cfg = _check_config(config)
    if resident and cfg.memory is None:
        raise ValueError("resident weights need a device memory (device_memory='none')")
    return _op_cost(cfg, op, _shape_of(op, shape), bool(table), bool(profiled), bool(resident))


@lru_cache(maxsize=4096)
def _op_cost(cfg: AcceleratorConfig, op: str, dims: tuple, table: bool,
             profiled: bool, resident: bool = False) -> OpCost:
    segs: list = []
    macs = 0
    plan = None
    if op in ("matmul", "linear"):
        m, k, n = dims
        macs = m * k * n
        plan = plan_device_gemm(cfg, m, k, n, linear=op == "linear",
                                weights_at=0 if resident else None)
    elif op == "upload":
        if cfg.memory is None:
            raise ValueError("this config has no device memory (device_memory='none')")
        line = cfg.memory.line_bytes
        segs = list(upload_segments(cfg, 0, _ceil(dims[0], line) * line))
    elif op == "activation":
        segs = list(activation_segments(cfg, dims[0]))
    else:
        segs = list(adam_segments(cfg, dims[0]))
    tally = _Tally(cfg)
    if table:
        tally.add_segments([table_segment(cfg, 0)])
    tally.add_segments(segs)
    if plan is not None:
        tally.add_plan(plan)
    if profiled:
        tally.add_segments(profile_segments(cfg))
    return tally.cost(op, macs)


# ---------------------------------------------------------------------------
# board images and projections

#: 8N1 UART: a start bit, eight data bits, a stop bit per byte.
UART_BITS_PER_BYTE = 10


@dataclass(frozen=True)
class BoardImage:
    """A device image to project onto: a name and the config it is built from."""

    name: str
    config: AcceleratorConfig

    @property
    def clock_hz(self) -> int:
        return int(self.config.clock_hz)

    @property
    def baud(self) -> int:
        return int(self.config.baud)

    @property
    def macs(self) -> int:
        """MACs per cycle of the image's array."""
        return self.config.macs

    @property
    def peak_ops_per_s(self) -> float:
        """Two operations per MAC, every PE every cycle at the image's clock."""
        return float(self.config.peak_ops_per_cycle * self.clock_hz)

    @property
    def link_bytes_per_s(self) -> float:
        return self.baud / UART_BITS_PER_BYTE

    def missing_unit(self, op: str) -> str | None:
        """The first unit ``op`` needs that this image lacks, or None."""
        have = {"gemm": True, "activation": self.config.has_activation,
                "adam": self.config.has_adam, "memory": self.config.memory is not None}
        return next((u for u in OP_UNITS[op] if not have[u]), None)

    def as_dict(self) -> dict:
        c = self.config
        return {"board": self.name, "rows": c.rows, "cols": c.cols, "macs": c.macs,
                "clock_hz": self.clock_hz, "baud": self.baud,
                "peak_gops": self.peak_ops_per_s / 1e9,
                "link_bytes_per_s": self.link_bytes_per_s,
                "has_activation": c.has_activation, "has_adam": c.has_adam,
                "device_memory": c.device_memory}


def board_images(config: AcceleratorConfig | None = None) -> list[BoardImage]:
    """``"config"`` (``config``, default :data:`~hetaccel.spec.DEFAULT_CONFIG`)
    then every board of the catalog with its default image, by name."""
    config = _check_config(config or DEFAULT_CONFIG)
    return [BoardImage("config", config)] + [BoardImage(name, default_config(name))
                                             for name in sorted(BOARDS)]


def board_image(name: str | None, config: AcceleratorConfig | None = None) -> BoardImage:
    """The image called ``name`` (None or ``"config"``: ``config`` itself)."""
    if name in (None, "config"):
        return BoardImage("config", _check_config(config or DEFAULT_CONFIG))
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; known boards: "
                         f"{', '.join(sorted(BOARDS) + ['config'])}")
    return BoardImage(name, default_config(name))


@dataclass(frozen=True)
class Projection:
    """An operation's time on one board image.

    ``compute_s`` is its units' busy cycles at the image's clock, ``link_s``
    the larger direction of its frame bytes at the image's baud (the UART is
    full duplex; 10 bits per byte), ``memory_s`` the DMA engine's cycles
    (LOAD / STORE of device memory) at the clock.  Loads, transfers and
    read-backs overlap compute (the scratchpads are double-buffered), so
    ``seconds`` is the largest of the three, which names the ``bound``.  When the image
    lacks a unit the operation needs, nothing is projected: ``missing_unit``
    names it, ``bound`` is ``"cpu"`` and ``seconds`` None (the caller decides
    what the host would spend instead).
    """

    board: str
    clock_hz: int
    baud: int
    busy_cycles: int
    bytes_in: int
    bytes_out: int
    compute_s: float
    link_s: float
    seconds: float | None
    bound: str
    missing_unit: str | None = None
    memory_s: float = 0.0
    dram_bytes: int = 0

    def as_dict(self) -> dict:
        return {"board": self.board, "clock_hz": self.clock_hz, "baud": self.baud,
                "busy_cycles": self.busy_cycles, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "compute_s": self.compute_s,
                "link_s": self.link_s, "memory_s": self.memory_s,
                "dram_bytes": self.dram_bytes, "projected_s": self.seconds,
                "bound": self.bound, "missing_unit": self.missing_unit}


def project(cost: OpCost, image: BoardImage) -> Projection:
    """``cost`` (computed on ``image.config``) in seconds on ``image``."""
    busy = cost.busy_cycles
    compute = busy / image.clock_hz
    link = max(cost.bytes_in, cost.bytes_out) * UART_BITS_PER_BYTE / image.baud
    memory = cost.dma_cycles / image.clock_hz
    seconds, bound = max((link, "link"), (compute, "compute"), (memory, "memory"),
                         key=lambda t: t[0])
    return Projection(image.name, image.clock_hz, image.baud, busy, cost.bytes_in,
                      cost.bytes_out, compute, link, seconds, bound, None, memory,
                      cost.dram_bytes)


def project_op(image: BoardImage, op: str, shape: dict, *, table: bool = False,
               profiled: bool = True, resident: bool = False) -> Projection:
    """``op`` of ``shape`` planned on the image's own config and projected onto it.

    ``resident``: the weights live in device memory when the image has one;
    an image without one receives them over the link on every call, as it
    would have to.
    """
    missing = image.missing_unit(op) if op in OP_UNITS else None
    if missing is not None:
        return Projection(image.name, image.clock_hz, image.baud, 0, 0, 0, 0.0, 0.0, None,
                          "cpu", missing)
    resident = resident and image.config.memory is not None
    return project(op_cost(image.config, op, shape, table=table, profiled=profiled,
                           resident=resident), image)


def utilisation(macs: int, gemm_busy: int, array_macs: int) -> float:
    """MAC utilisation: useful MACs over what the array could do while busy.

    ``macs / (array_macs * gemm_busy)``, with ``gemm_busy`` the matmul
    engine's busy cycles (``GEMM_BUSY``, or :attr:`OpCost.busy` ``["gemm"]``)
    on a config whose array does ``array_macs`` MACs per cycle (``config.macs``).  1.0 means every PE did a useful MAC in every cycle the
    engine was fed; padding of partial tiles and each GEMM's weight load lower
    it.  Link time is not in it: :func:`project` says whether the link or the
    array bounds an operation.
    """
    if gemm_busy <= 0:
        return 0.0
    return macs / (array_macs * gemm_busy)

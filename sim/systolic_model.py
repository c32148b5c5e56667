"""Bit-exact NumPy model of the matmul engine, its cycle model and GEMM tiling.

One implementation, used by the RTL tests, the benchmark, the device model and
the host runtime:

- :func:`gemm_reference` -- ``a @ b`` exactly, in int64.
- :func:`plan_gemm`, :func:`weight_tile`, :func:`act_tile`, :func:`tile_streams`
  -- how a GEMM of any ``M, K, N`` becomes a sequence of weight tiles
  (``rows x cols``, zero-padded) each followed by the activation rows that use
  it, accumulating over K into accumulator rows.
- :class:`EngineModel` -- the engine's state (two-bank weight queue, the
  accumulator memory) updated exactly like the RTL, including the modulo
  ``2**acc_bits`` wrap (unreachable for a config-legal K).
- :func:`tile_cycles`, :func:`gemm_cycles`, :func:`row_schedule` -- the cycle
  model of a tile sequence fed at full rate: weight loads, double buffering,
  the read-modify-write hazard stall (:data:`RMW_WINDOW`), fill and drain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..spec import AcceleratorConfig

__all__ = [
    "gemm_reference", "wrap", "TileOp", "OutputBlock", "GemmPlan", "plan_gemm",
    "weight_tile", "act_tile", "tile_streams", "EngineModel", "gemm_model",
    "tile_cycles", "gemm_cycles", "row_schedule", "latency", "RMW_WINDOW",
]


def _check_config(config) -> AcceleratorConfig:
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be a hetaccel.spec.AcceleratorConfig, not "
                        f"{type(config).__name__}")
    return config


def _check_matrix(name: str, x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {x.shape}")
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {x.dtype}")
    return x


def _check_operands(config: AcceleratorConfig, name: str, x: np.ndarray) -> None:
    if x.size and (x.min() < config.operand_min or x.max() > config.operand_max):
        bad = x[(x < config.operand_min) | (x > config.operand_max)].flat[0]
        raise ValueError(f"{name} holds {int(bad)}, outside the signed {config.operand_bits}-bit "
                         f"operand range [{config.operand_min}, {config.operand_max}]")


def gemm_reference(a, b) -> np.ndarray:
    """``a @ b`` computed exactly in int64 (the ground truth every test uses)."""
    a = _check_matrix("a", a)
    b = _check_matrix("b", b)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: a is {a.shape}, b is {b.shape}")
    return a.astype(np.int64) @ b.astype(np.int64)


def wrap(x, bits: int) -> np.ndarray:
    """Two's-complement wrap of integers to signed ``bits`` (what a register does)."""
    x = np.asarray(x, dtype=np.int64)
    if bits >= 64:
        return x
    half = np.int64(1) << np.int64(bits - 1)
    return ((x + half) & ((half << np.int64(1)) - np.int64(1))) - half


def latency(config: AcceleratorConfig) -> int:
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


# ---------------------------------------------------------------------------
# Tiling
# ---------------------------------------------------------------------------

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


def weight_tile(config: AcceleratorConfig, b: np.ndarray, k0: int, n0: int) -> np.ndarray:
    """``B[k0:k0+rows, n0:n0+cols]`` zero-padded to ``(rows, cols)`` (int64)."""
    t = np.zeros((config.rows, config.cols), dtype=np.int64)
    part = b[k0:k0 + config.rows, n0:n0 + config.cols]
    t[:part.shape[0], :part.shape[1]] = part
    return t


def act_tile(config: AcceleratorConfig, a: np.ndarray, m0: int, m: int, k0: int) -> np.ndarray:
    """``A[m0:m0+m, k0:k0+rows]`` zero-padded to ``(m, rows)`` (int64)."""
    t = np.zeros((m, config.rows), dtype=np.int64)
    part = a[m0:m0 + m, k0:k0 + config.rows]
    t[:part.shape[0], :part.shape[1]] = part
    return t


@dataclass
class TileStream:
    """What is sent to the engine for one :class:`TileOp`."""

    op: TileOp
    weights: np.ndarray      # (rows, cols): one ``weights`` transfer per row
    acts: np.ndarray         # (m, rows): one ``acts`` transfer per row
    last: np.ndarray         # (m,) bool, True on the final row
    accumulate: np.ndarray   # (m,) bool
    acc_addr: np.ndarray     # (m,) int


def tile_streams(config: AcceleratorConfig, a, b, plan: GemmPlan | None = None) -> Iterator[TileStream]:
    """The weight and activation transfers of ``plan`` (default :func:`plan_gemm`)."""
    config = _check_config(config)
    a = _check_matrix("a", a)
    b = _check_matrix("b", b)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: a is {a.shape}, b is {b.shape}")
    _check_operands(config, "a", a)
    _check_operands(config, "b", b)
    if plan is None:
        plan = plan_gemm(config, a.shape[0], a.shape[1], b.shape[1])
    for op in plan.tiles:
        last = np.zeros(op.m, dtype=bool)
        last[-1] = True
        yield TileStream(op=op, weights=weight_tile(config, b, op.k0, op.n0),
                         acts=act_tile(config, a, op.m0, op.m, op.k0), last=last,
                         accumulate=np.full(op.m, op.accumulate),
                         acc_addr=op.acc_addr + np.arange(op.m))


# ---------------------------------------------------------------------------
# Engine model
# ---------------------------------------------------------------------------

class EngineModel:
    """Bit-exact state model of :class:`hetaccel.rtl.engine.MatmulEngine`.

    Weight tiles queue in load order (the RTL holds at most two); activation
    rows consume the head tile, ``last`` retires it.  Results update the
    accumulator memory row by row, so repeated addresses behave as in the RTL.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = _check_config(config)
        self.acc = np.zeros((config.acc_depth, config.cols), dtype=np.int64)
        self._tiles: list[np.ndarray] = []
        self._partial: list[np.ndarray] = []

    def load_weight_row(self, row) -> None:
        row = np.asarray(row, dtype=np.int64).reshape(self.config.cols)
        _check_operands(self.config, "weight row", row)
        self._partial.append(row)
        if len(self._partial) == self.config.rows:
            self._tiles.append(np.stack(self._partial))
            self._partial = []

    def load_weights(self, tile) -> None:
        tile = np.asarray(tile, dtype=np.int64)
        if tile.shape != (self.config.rows, self.config.cols):
            raise ValueError(f"weight tile must be (rows, cols) = "
                             f"{(self.config.rows, self.config.cols)}, got {tile.shape}")
        for row in tile:
            self.load_weight_row(row)

    def results(self, acts) -> np.ndarray:
        """Result rows of ``acts`` (m, rows) against the head tile, as the array emits them."""
        if not self._tiles:
            raise ValueError("activation rows sent before a complete weight tile was loaded")
        acts = np.asarray(acts, dtype=np.int64)
        _check_operands(self.config, "activation row", acts)
        return wrap(acts @ self._tiles[0], self.config.acc_bits)

    def stream(self, acts, last, accumulate, acc_addr) -> np.ndarray:
        """Send activation rows; returns the result rows (also applied to ``acc``)."""
        acts = np.atleast_2d(np.asarray(acts, dtype=np.int64))
        last = np.broadcast_to(np.asarray(last, dtype=bool), (len(acts),))
        accumulate = np.broadcast_to(np.asarray(accumulate, dtype=bool), (len(acts),))
        acc_addr = np.broadcast_to(np.asarray(acc_addr, dtype=np.int64), (len(acts),))
        if acc_addr.size and (acc_addr.min() < 0 or acc_addr.max() >= self.config.acc_depth):
            raise ValueError(f"acc_addr outside [0, {self.config.acc_depth})")
        out = np.empty((len(acts), self.config.cols), dtype=np.int64)
        start = 0
        for end in list(np.flatnonzero(last) + 1) + [len(acts)]:
            if end > start:
                out[start:end] = self.results(acts[start:end])
                if last[end - 1]:
                    self._tiles.pop(0)
            start = end
        addr_unique = len(np.unique(acc_addr)) == len(acc_addr)
        if addr_unique:
            old = self.acc[acc_addr]
            self.acc[acc_addr] = np.where(accumulate[:, None],
                                          wrap(old + out, self.config.acc_bits), out)
        else:
            for r in range(len(acts)):
                a = acc_addr[r]
                self.acc[a] = wrap(self.acc[a] + out[r], self.config.acc_bits) if accumulate[r] else out[r]
        return out

    def run(self, ts: TileStream) -> None:
        self.load_weights(ts.weights)
        self.stream(ts.acts, ts.last, ts.accumulate, ts.acc_addr)

    def read(self, addr: int, count: int = 1) -> np.ndarray:
        if not (0 <= addr and addr + count <= self.config.acc_depth):
            raise ValueError(f"rows {addr}..{addr + count - 1} outside acc_depth={self.config.acc_depth}")
        return self.acc[addr:addr + count].copy()

    def write(self, addr: int, rows) -> None:
        rows = np.atleast_2d(np.asarray(rows, dtype=np.int64))
        if not (0 <= addr and addr + len(rows) <= self.config.acc_depth):
            raise ValueError(f"rows {addr}..{addr + len(rows) - 1} outside acc_depth={self.config.acc_depth}")
        self.acc[addr:addr + len(rows)] = wrap(rows, self.config.acc_bits)


def gemm_model(config: AcceleratorConfig, a, b) -> np.ndarray:
    """``a @ b`` computed the way the engine computes it (tile by tile, wrapping)."""
    config = _check_config(config)
    a = _check_matrix("a", a)
    b = _check_matrix("b", b)
    plan = plan_gemm(config, a.shape[0], a.shape[1], b.shape[1])
    model = EngineModel(config)
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)
    by_last = {blk.last_tile: blk for blk in plan.blocks}
    for i, ts in enumerate(tile_streams(config, a, b, plan)):
        model.run(ts)
        blk = by_last.get(i)
        if blk is not None:
            width = min(config.cols, b.shape[1] - blk.n0)
            out[blk.m0:blk.m0 + blk.m, blk.n0:blk.n0 + width] = \
                model.read(blk.acc_addr, blk.m)[:, :width]
    return out


# ---------------------------------------------------------------------------
# Cycle model
# ---------------------------------------------------------------------------

RMW_WINDOW = 3
"""Accepted rows whose accumulator sums an accumulating row's read would miss.

The engine reads a row's accumulator row (its read-modify-write) ``L - 1``
cycles after accepting it (``L`` = :func:`latency`; two cycles before the row
is on ``results``) and writes the sum at the edge ending cycle ``L + 2`` after
accepting it, with no forwarding between the two.  A row accepted in cycle
``c'`` has therefore landed for a read in cycle ``c + L - 1`` only if
``c' + L + 2 <= c + L - 2``, i.e. ``c - c' >= 4``, for any array shape.  An
accumulating row is held at the engine's ``acts`` input (bubbles) while a row
with its ``acc_addr`` was accepted in the previous ``RMW_WINDOW`` cycles.
:class:`hetaccel.rtl.engine.MatmulEngine` imports this value.
"""


def _tile_fields(tile) -> tuple[int, int | None, bool]:
    if isinstance(tile, TileOp):
        return int(tile.m), int(tile.acc_addr), bool(tile.accumulate)
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise TypeError(f"a tile is a TileOp or a row count, not {tile!r}")
    return int(tile), None, False


def _schedule(config: AcceleratorConfig, tiles, *, rows_out: list | None = None) -> int:
    """Cycle the last activation row is accepted; appends every row's cycle to ``rows_out``.

    Only the first ``RMW_WINDOW`` rows of a tile can meet the hazard stall:
    later rows follow rows of their own tile, which have other addresses.
    """
    R, L, W = config.rows, latency(config), RMW_WINDOW
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


def row_schedule(config: AcceleratorConfig, tiles) -> np.ndarray:
    """The cycle each activation row is accepted, at full rate (see :func:`tile_cycles`).

    ``tiles`` as for :func:`tile_cycles`.  Gaps between consecutive rows of a
    tile are the read-modify-write hazard stall (:data:`RMW_WINDOW`).
    """
    config = _check_config(config)
    out: list[int] = []
    _schedule(config, list(tiles), rows_out=out)
    return np.array(out, dtype=np.int64)


def tile_cycles(config: AcceleratorConfig, tile_rows: Sequence, *, engine: bool = True) -> int:
    """Cycles to run a sequence of tiles at full rate.

    Each element of ``tile_rows`` is a :class:`TileOp` (its ``m`` rows go to
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
    :func:`plan_gemm` plan start at least ``rows`` cycles apart (their weight
    loads), so with ``rows > RMW_WINDOW`` the hazard stall never costs a cycle;
    smaller arrays pay it for K-tiles of fewer than ``RMW_WINDOW + 1`` rows.
    """
    config = _check_config(config)
    tiles = list(tile_rows)
    if not tiles:
        raise ValueError(f"tile_rows must be a non-empty list of tiles, got {tile_rows!r}")
    try:
        ae = _schedule(config, tiles)
    except ValueError as e:
        raise ValueError(f"tile_rows must hold positive row counts or TileOps, got "
                         f"{tile_rows!r}: {e}") from None
    return ae + latency(config) + 2 + (1 if engine else 0)


def gemm_cycles(config: AcceleratorConfig, m: int, k: int, n: int, *, engine: bool = True,
                plan: GemmPlan | None = None) -> int:
    """Predicted cycles of ``plan_gemm(config, m, k, n)`` at full rate (see :func:`tile_cycles`)."""
    if plan is None:
        plan = plan_gemm(config, m, k, n)
    return tile_cycles(config, plan.tiles, engine=engine)

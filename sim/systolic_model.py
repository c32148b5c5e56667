"""Bit-exact NumPy model of the matmul engine.

One implementation, used by the RTL tests, the benchmark and the device model:

- :func:`gemm_reference` -- ``a @ b`` exactly, in int64.
- :func:`weight_tile`, :func:`act_tile`, :func:`tile_streams` -- the data of
  each tile of a plan (:func:`hetaccel.host.planner.plan_gemm`): weight tiles
  (``rows x cols``, zero-padded) each followed by the activation rows that use
  it, accumulating over K into accumulator rows.
- :class:`EngineModel` -- the engine's state (two-bank weight queue, the
  accumulator memory) updated exactly like the RTL, including the modulo
  ``2**acc_bits`` wrap (unreachable for a config-legal K).

The engine's timing is :mod:`hetaccel.spec.timing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..spec import AcceleratorConfig

__all__ = [
    "gemm_reference", "wrap", "weight_tile", "act_tile", "TileStream", "tile_streams",
    "EngineModel", "gemm_model",
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


# ---------------------------------------------------------------------------
# Tiling
# ---------------------------------------------------------------------------

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
    """What is sent to the engine for one tile of a plan (:class:`hetaccel.host.planner.TileOp`)."""

    op: object               # the plan's TileOp
    weights: np.ndarray      # (rows, cols): one ``weights`` transfer per row
    acts: np.ndarray         # (m, rows): one ``acts`` transfer per row
    last: np.ndarray         # (m,) bool, True on the final row
    accumulate: np.ndarray   # (m,) bool
    acc_addr: np.ndarray     # (m,) int


def tile_streams(config: AcceleratorConfig, a, b, plan) -> Iterator[TileStream]:
    """The weight and activation transfers of ``plan`` (a :func:`hetaccel.host.planner.plan_gemm` plan)."""
    config = _check_config(config)
    a = _check_matrix("a", a)
    b = _check_matrix("b", b)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: a is {a.shape}, b is {b.shape}")
    _check_operands(config, "a", a)
    _check_operands(config, "b", b)
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


def gemm_model(config: AcceleratorConfig, a, b, plan) -> np.ndarray:
    """``a @ b`` computed the way the engine computes it (tile by tile, wrapping).

    ``plan`` is the tiling (:func:`hetaccel.host.planner.plan_gemm`) the
    engine is fed with.
    """
    config = _check_config(config)
    a = _check_matrix("a", a)
    b = _check_matrix("b", b)
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

"""The one planner: how work is tiled onto a device, and what it costs.

Every count of cycles or bytes the runtime, the workloads, the profiler and the
command line quote comes from here, computed for a device image's own config
(array shape, memories, clock, link rate), with the unit timings of
:mod:`hetaccel.spec.timing`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..spec import AcceleratorConfig
from ..spec.timing import tile_cycles

__all__ = ["TileOp", "OutputBlock", "GemmPlan", "plan_gemm", "gemm_cycles"]


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

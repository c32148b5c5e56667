"""Technology-independent ("ASIC-style") synthesis report of the device.

The device is synthesised by Yosys to a generic CMOS gate library (``abc -g
cmos2``: NAND, NOR, NOT, ... plus D flip-flops); ``stat -tech cmos`` then
estimates the transistor count of the logic.  Scratchpads and frame buffers
are kept as memories (``memory -nomap``): an ASIC would use SRAM macros for
them, so they are reported as bits, not as thousands of flip-flops.  The
transistor total adds 24 per flip-flop and 6 per memory bit to Yosys's gate
estimate (which counts combinational gates only).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from amaranth.back import rtlil

from ..rtl.device import Device
from ..spec import AcceleratorConfig
from .build import _run, tool_env

__all__ = ["asic_report", "SCRIPT", "FF_TRANSISTORS", "SRAM_TRANSISTORS"]

# `stat -tech cmos` counts gates only (it prints "N+" when other cells exist):
# flip-flops and memory bits are added with these textbook figures.
FF_TRANSISTORS = 24      # static master-slave D flip-flop with synchronous reset/enable
SRAM_TRANSISTORS = 6     # 6T SRAM cell

SCRIPT = """\
read_rtlil {name}.il
hierarchy -top {name}
proc
flatten
opt -full
memory -nomap
opt -full
wreduce
alumacc
opt
techmap
opt -fast
abc -g cmos2
opt_clean -purge
tee -o {name}.stat.txt stat -tech cmos
tee -q -o {name}.mems.txt dump t:$mem_v2
tee -q -o {name}.stat.json stat -json -tech cmos
"""


def _parse_text_stat(text: str) -> dict:
    out = {}
    m = re.search(r"Estimated number of transistors:\s+(\d+)", text) or \
        re.search(r"(\d+)\s+transistors", text)
    if m:
        out["transistors"] = int(m.group(1))
    return out


def asic_report(config: AcceleratorConfig, *, out_dir: str | Path = "build/asic",
                core=None, name: str = "device") -> dict:
    """Synthesise the device generically; return cell and transistor counts."""
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = tool_env()
    t0 = time.monotonic()
    if core is None:
        dut = Device(config)
    else:
        dut = core(config)
    (out / f"{name}.il").write_text(rtlil.convert(dut, name=name))
    (out / f"{name}.ys").write_text(SCRIPT.format(name=name))
    gen_s = time.monotonic() - t0
    proc, synth_s = _run([env["YOSYS"], "-q", "-l", f"{name}.log", f"{name}.ys"], out, env,
                         "yosys.out")
    if proc.returncode:
        raise RuntimeError(f"yosys failed; see {out / (name + '.log')}:\n{proc.stderr[-2000:]}")
    stat = json.loads((out / f"{name}.stat.json").read_text())
    design = stat.get("design") or stat["modules"][f"\\{name}"]
    cells = {k.lstrip("$"): v for k, v in design.get("num_cells_by_type", {}).items()}
    # memory macros: bits from each $mem_v2 cell's SIZE x WIDTH
    dump = (out / f"{name}.mems.txt").read_text()
    memory_bits = 0
    memories = 0
    for cell in dump.split("cell $mem_v2")[1:]:
        size = re.search(r"parameter \\SIZE (\d+)", cell)
        width = re.search(r"parameter \\WIDTH (\d+)", cell)
        if size and width:
            memories += 1
            memory_bits += int(size.group(1)) * int(width.group(1))
    logic = design.get("estimated_num_transistors")
    if logic is None:
        logic = _parse_text_stat((out / f"{name}.stat.txt").read_text()).get("transistors")
    logic = int(str(logic).rstrip("+")) if logic is not None else None
    flops = sum(v for k, v in cells.items() if "DFF" in k.upper())
    total = None if logic is None else logic + FF_TRANSISTORS * flops + SRAM_TRANSISTORS * memory_bits
    return {
        "target": "asic",
        "flow": "yosys generic synthesis, abc -g cmos2, stat -tech cmos",
        "cells": int(design.get("num_cells", sum(cells.values()))),
        "cells_by_type": cells,
        "flip_flops": flops,
        "transistors_logic": logic,
        "transistors": total,
        "transistor_model": f"logic gates from yosys stat -tech cmos + {FF_TRANSISTORS} per "
                            f"flip-flop + {SRAM_TRANSISTORS} per memory bit (6T SRAM)",
        "memories": memories,
        "memory_bits": memory_bits,
        "macs": config.macs,
        "config": config.to_dict(),
        "wall_s": {"generate_s": round(gen_s, 1), "synth_s": round(synth_s, 1)},
        "log": str(out / f"{name}.log"),
    }

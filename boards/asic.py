"""Technology-independent ("ASIC-style") synthesis report of the device.

The device is synthesised by Yosys to a generic CMOS gate library (``abc -g
cmos2``: NAND, NOR, NOT, ... plus D flip-flops); ``stat -tech cmos`` then
estimates the transistor count of the logic.  Scratchpads and frame buffers
are kept as memories (``memory -nomap``): an ASIC would use SRAM macros for
them, so they are reported as bits, not as thousands of flip-flops.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from amaranth.back import rtlil

from ..spec import AcceleratorConfig
from .build import _run, tool_env

__all__ = ["asic_report", "SCRIPT"]

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
        from ..rtl.device import Device
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
    mem_bits = 0
    memories = 0
    for line in (out / f"{name}.stat.txt").read_text().splitlines():
        mm = re.match(r"\s+Number of memory bits:\s+(\d+)", line) or \
            re.match(r"\s+(\d+)\s+memory bits", line)
        if mm:
            mem_bits = int(mm.group(1))
    memories = sum(v for k, v in cells.items() if k.startswith("mem"))
    transistors = design.get("estimated_num_transistors")
    if transistors is None:
        transistors = _parse_text_stat((out / f"{name}.stat.txt").read_text()).get("transistors")
    flops = sum(v for k, v in cells.items() if "DFF" in k.upper())
    return {
        "target": "asic",
        "flow": "yosys generic synthesis, abc -g cmos2, stat -tech cmos",
        "cells": int(design.get("num_cells", sum(cells.values()))),
        "cells_by_type": cells,
        "flip_flops": flops,
        "transistors": int(transistors) if transistors is not None else None,
        "memories": memories,
        "memory_bits": mem_bits,
        "macs": config.macs,
        "config": config.to_dict(),
        "wall_s": {"generate_s": round(gen_s, 1), "synth_s": round(synth_s, 1)},
        "log": str(out / f"{name}.log"),
    }

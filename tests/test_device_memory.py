"""Device memory: the DEVICE space, LOAD / STORE in the contract and the emulator,
and resident tensors in the runtime, with the planner's counts exact."""

import numpy as np
import pytest

from hetaccel.host import Accelerator, DeviceMemoryFull, DeviceResetError
from hetaccel.host.planner import BoardImage, count, op_cost, profile_segments
from hetaccel.host.tensors import DeviceMemoryAllocator
from hetaccel.host.transport import EmuTransport, FaultPlan, FaultyTransport
from hetaccel.sim.device_model import DeviceModel
from hetaccel.sim.sdram_model import Request
from hetaccel.spec import (AcceleratorConfig, MemSpace, Opcode, Status, check_instruction,
                           config_from_identity, dma_spaces, encode_instruction, identity_words,
                           mem_word, pack_words, register_map)
from hetaccel.spec.boards import default_config
from hetaccel.spec.timing import DMA_LEAD, DMA_TAIL

SDRAM = AcceleratorConfig(device_memory="sdram32m", clock_hz=100_000_000)
ULX3S = default_config("ulx3s-85f", device_memory="sdram32m", has_activation=True)
SPRAM = AcceleratorConfig(rows=4, cols=4, device_memory="spram128k", input_depth=64,
                          weight_depth=64, acc_depth=64, output_depth=64, max_payload=128)
RNG = np.random.default_rng(7)


def _load(**f):
    return encode_instruction(Opcode.LOAD, **f)


def _store(**f):
    return encode_instruction(Opcode.STORE, **f)


# --- contract -----------------------------------------------------------------------

def test_config_names_its_device_memory_and_refuses_what_cannot_run():
    assert SDRAM.memory.bytes == 32 << 20 and SDRAM.memory.line_bytes == 16
    with pytest.raises(ValueError, match="device_memory must be one of"):
        AcceleratorConfig(device_memory="ddr3")
    with pytest.raises(ValueError, match="cannot run at clock_hz=200000000"):
        AcceleratorConfig(device_memory="sdram32m", clock_hz=200_000_000)


@pytest.mark.parametrize("config", [SDRAM, SPRAM, AcceleratorConfig()])
def test_identity_reports_the_device_memory(config):
    assert config_from_identity(identity_words(config)) == config
    regs = register_map(config)
    assert ("DMA_BUSY" in regs) == (config.memory is not None)


def test_a_device_without_memory_keeps_its_identity_word():
    # CONFIG4 of a config without device memory is what it was before the field
    assert identity_words(AcceleratorConfig())["CONFIG4"] == 0


def test_load_store_checks():
    c = SDRAM
    ok = _load(space=MemSpace.WEIGHT, addr=0, dram_addr=0, count=8)
    assert check_instruction(c, Opcode.LOAD, ok) == Status.OK
    assert check_instruction(AcceleratorConfig(), Opcode.LOAD, ok) == Status.UNKNOWN_OPCODE
    assert check_instruction(c, Opcode.LOAD, ok[:-1]) == Status.BAD_LENGTH
    bad = {
        "misaligned start": _load(space=MemSpace.WEIGHT, addr=0, dram_addr=8, count=8),
        "odd count of 8-byte words": _load(space=MemSpace.WEIGHT, addr=0, dram_addr=0, count=7),
        "no words": _load(space=MemSpace.WEIGHT, addr=0, dram_addr=0, count=0),
        "past the scratchpad": _load(space=MemSpace.WEIGHT, addr=510, dram_addr=0, count=4),
        "past the memory": _load(space=MemSpace.WEIGHT, addr=0, dram_addr=(32 << 20) - 16,
                                 count=4),
        "TABLE is not loadable": _load(space=MemSpace.TABLE, addr=0, dram_addr=0, count=16),
        "OUTPUT is not loadable": _load(space=MemSpace.OUTPUT, addr=0, dram_addr=0, count=2),
        "DEVICE itself": _load(space=MemSpace.DEVICE, addr=0, dram_addr=0, count=1),
        "unknown space": _load(space=9, addr=0, dram_addr=0, count=1),
    }
    for why, payload in bad.items():
        assert check_instruction(c, Opcode.LOAD, payload) == Status.ADDR_RANGE, why
    assert check_instruction(c, Opcode.STORE, _store(space=MemSpace.ACT_PARAM, addr=0,
                                                     dram_addr=0, count=1)) == Status.ADDR_RANGE
    assert check_instruction(c, Opcode.STORE, _store(space=MemSpace.OUTPUT, addr=0,
                                                     dram_addr=0, count=1)) == Status.OK
    # the last whole line of the memory
    assert check_instruction(c, Opcode.LOAD, _load(space=MemSpace.WEIGHT, addr=0,
                                                   dram_addr=(32 << 20) - 16,
                                                   count=2)) == Status.OK


def test_dma_spaces_need_words_that_tile_lines():
    # a 3-column array's 3-byte weight words neither fill nor halve a 16-byte line
    odd = AcceleratorConfig(rows=8, cols=3, device_memory="sdram32m")
    assert MemSpace.WEIGHT not in dma_spaces(odd, Opcode.LOAD)
    assert MemSpace.INPUT in dma_spaces(odd, Opcode.LOAD)          # 8 bytes: two a line
    # 4-byte words would be moved one a cycle, four to a line: too slow to stream
    small = AcceleratorConfig(rows=4, cols=4, device_memory="sdram32m")
    assert MemSpace.INPUT not in dma_spaces(small, Opcode.LOAD)
    assert MemSpace.INPUT in dma_spaces(SPRAM, Opcode.LOAD)         # 4 of an 8-byte line
    assert dma_spaces(AcceleratorConfig(), Opcode.LOAD) == frozenset()


# --- the emulator -------------------------------------------------------------------

def _random_words(config, space, n):
    w = mem_word(config, space)
    if w.kind == "float":
        return RNG.standard_normal((n,) + w.shape).astype(np.float32)
    lo, hi = -(1 << (w.width - 1)), (1 << (w.width - 1))
    return RNG.integers(lo, hi, (n,) + w.shape, dtype=np.int64)


@pytest.mark.parametrize("config", [SDRAM, ULX3S, SPRAM], ids=["sdram-8x8", "sdram-16x16",
                                                               "spram-4x4"])
def test_store_then_load_moves_every_space_bit_exactly(config):
    dev = DeviceModel(config)
    line = config.memory.line_bytes
    for space in sorted(dma_spaces(config, Opcode.STORE) & dma_spaces(config, Opcode.LOAD)):
        wb = mem_word(config, space).bytes
        n = max(1, line // wb) * 3
        data = pack_words(config, space, _random_words(config, space, n))
        assert dev.request(Opcode.WRITE_MEM, encode_instruction(
            Opcode.WRITE_MEM, space=int(space), addr=1, data=data))[0] == Status.OK
        at = 5 * line
        assert dev.request(Opcode.STORE, _store(space=int(space), addr=1, dram_addr=at,
                                                count=n))[0] == Status.OK
        # word i at byte dram_addr + i * word, in the wire layout
        assert dev.dram.read(at, len(data)) == data, space.name
        st, back = dev.request(Opcode.READ_MEM, encode_instruction(
            Opcode.READ_MEM, space=int(MemSpace.DEVICE), addr=at // line,
            count=len(data) // line))
        assert st == Status.OK and back == data
        assert dev.request(Opcode.LOAD, _load(space=int(space), addr=0, dram_addr=at,
                                              count=n))[0] == Status.OK
        st, got = dev.request(Opcode.READ_MEM, encode_instruction(
            Opcode.READ_MEM, space=int(space), addr=0, count=n))
        assert got == data, space.name


def test_load_keeps_the_low_bits_of_narrow_accumulators():
    c = AcceleratorConfig(device_memory="sdram32m", acc_bits=24, max_k=256)
    dev = DeviceModel(c)
    words = np.full((2, c.cols), 0x7FFFFFFF, dtype="<i4")      # wider than 24 bits
    dev.dram.write(0, words.tobytes())
    dev.request(Opcode.LOAD, _load(space=int(MemSpace.ACC), addr=0, dram_addr=0, count=2))
    assert (dev.mem[MemSpace.ACC][:2] == -1).all()             # 0xFFFFFF sign-extended


def test_sdram_bytes_are_where_the_controller_puts_them():
    dev = DeviceModel(SDRAM)
    line = bytes(range(16))
    dev.request(Opcode.WRITE_MEM, encode_instruction(Opcode.WRITE_MEM, space=int(MemSpace.DEVICE),
                                                     addr=1234, data=line))
    # beat k of 128-bit word 1234 is 16-bit word 8*1234 + k, little-endian
    assert dev.dram.sdram.read_int(1234) == int.from_bytes(line, "little")


@pytest.mark.parametrize("op,space,lines", [(Opcode.LOAD, MemSpace.WEIGHT, 1),
                                            (Opcode.LOAD, MemSpace.ACC, 40),
                                            (Opcode.STORE, MemSpace.OUTPUT, 2),
                                            (Opcode.STORE, MemSpace.INPUT, 300)])
def test_dma_cycles_are_the_controllers_schedule(op, space, lines):
    """DMA_BUSY = lead + max(the SDRAM schedule, one word a cycle) + tail, the
    schedule replayed request by request (not the fast path the model uses)."""
    c = ULX3S
    dev = DeviceModel(c)
    wb = mem_word(c, space).bytes
    n = lines * 16 // wb
    first = 1000
    assert dev.request(op, (_load if op == Opcode.LOAD else _store)(
        space=int(space), addr=0, dram_addr=first * 16, count=n))[0] == Status.OK
    sched = dev.dram.sdram.schedule([Request(first + i, op == Opcode.STORE, 0)
                                     for i in range(lines)])
    expected = DMA_LEAD[op] + max(sched.cycles, n) + DMA_TAIL
    assert dev.counters["DMA_BUSY"] == expected
    assert dev.counters["CYCLES"] == expected
    key = "DMA_BYTES_IN" if op == Opcode.LOAD else "DMA_BYTES_OUT"
    assert dev.counters[key] == lines * 16


def test_spram_moves_a_line_a_cycle():
    dev = DeviceModel(SPRAM)
    # 4-byte INPUT words, two to an 8-byte line: 32 words, 16 lines
    dev.request(Opcode.LOAD, _load(space=int(MemSpace.INPUT), addr=0, dram_addr=0, count=32))
    assert dev.counters["DMA_BUSY"] == DMA_LEAD[Opcode.LOAD] + max(16 + 1, 32) + DMA_TAIL


# --- resident tensors ---------------------------------------------------------------

class _Counting(EmuTransport):
    # the bytes on the wire: every frame takes the byte path (bulk=False)
    def __init__(self, config):
        super().__init__(config, bulk=False)
        self.sent = self.received = 0

    def send(self, data):
        self.sent += len(data)
        super().send(data)

    def receive(self, timeout, frames=1):
        data = super().receive(timeout, frames)
        self.received += len(data)
        return data


@pytest.mark.parametrize("config", [SDRAM, ULX3S, SPRAM], ids=["sdram-8x8", "sdram-16x16",
                                                               "spram-4x4"])
def test_resident_matmul_equals_the_reference_and_the_planner_counts_it(config):
    t = _Counting(config)
    with Accelerator(t, config) as acc:
        for m, k, n in [(1, 1, 1), (7, 40, 23), (37, 200, 70)]:
            a = RNG.integers(-128, 128, (m, k), dtype=np.int8)
            b = RNG.integers(-128, 128, (k, n), dtype=np.int8)
            s0, r0 = t.sent, t.received
            w = acc.upload(b)
            up = op_cost(config, "upload", {"bytes": w.nbytes})
            assert (t.sent - s0, t.received - r0) == (up.bytes_in, up.bytes_out)
            s0, r0 = t.sent, t.received
            got = acc.matmul(a, w)
            np.testing.assert_array_equal(got, a.astype(np.int64) @ b)
            cost = op_cost(config, "matmul", {"m": m, "k": k, "n": n}, resident=True)
            rec = acc.profile.last
            assert (t.sent - s0, t.received - r0) == (cost.bytes_in, cost.bytes_out)
            assert rec.counters["CYCLES"] == cost.cycles
            assert rec.busy_cycles == cost.busy
            assert rec.dma_cycles == cost.dma_cycles and rec.dram_bytes == cost.dram_bytes
            assert rec.counters["FRAMES"] == cost.frames - 1
            # what stays off the link: every weight byte
            plain = op_cost(config, "matmul", {"m": m, "k": k, "n": n})
            assert cost.bytes_in < plain.bytes_in
            w.free()
        assert acc.device_memory["used"] == 0


@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_resident_linear_is_bit_identical_to_sending_the_weights(activation):
    with Accelerator.open("emu", config=ULX3S) as acc:
        x = RNG.standard_normal((9, 96)).astype(np.float32)
        w = RNG.standard_normal((40, 96)).astype(np.float32)
        bias = RNG.standard_normal(40).astype(np.float32)
        with acc.upload(w, layout="linear") as tw:
            np.testing.assert_array_equal(acc.linear(x, tw, bias, activation),
                                          acc.linear(x, w, bias, activation))
        xi = RNG.integers(-128, 128, (9, 96), dtype=np.int8)
        wi = RNG.integers(-128, 128, (40, 96), dtype=np.int8)
        with acc.upload(wi, layout="linear") as tw:
            kw = dict(scale=1e-3, table_scales=(0.05, 1 / 64)) if activation == "gelu" else \
                dict(scale=1e-3)
            np.testing.assert_array_equal(acc.linear(xi, tw, None, activation, **kw),
                                          acc.linear(xi, wi, None, activation, **kw))
        assert acc.device_memory["tensors"] == 0


def test_full_memory_is_refused_and_loses_nothing():
    with Accelerator.open("emu", config=SPRAM) as acc:
        big = RNG.integers(-128, 128, (256, 256), dtype=np.int8)        # 64 KB
        keep = acc.upload(big)
        before = dict(acc.device_memory)
        sent = acc.link.bytes_sent
        with pytest.raises(DeviceMemoryFull, match="needs 81920 bytes.*largest free block "
                                                   "is 65536"):
            acc.upload(RNG.integers(-128, 128, (320, 256), dtype=np.int8))
        assert acc.device_memory == before and acc.link.bytes_sent == sent
        a = RNG.integers(-128, 128, (3, 256), dtype=np.int8)
        np.testing.assert_array_equal(acc.matmul(a, keep), a.astype(np.int64) @ big)


def test_resident_tensor_misuse_is_a_clear_error():
    with Accelerator.open("emu", config=SDRAM) as acc, \
            Accelerator.open("emu", config=SDRAM) as other:
        b = RNG.integers(-128, 128, (16, 8), dtype=np.int8)
        a = RNG.integers(-128, 128, (2, 16), dtype=np.int8)
        t = acc.upload(b)
        with pytest.raises(ValueError, match="another Accelerator"):
            other.matmul(a, t)
        with pytest.raises(ValueError, match="layout='matmul'; linear"):
            acc.linear(a, t, scale=1.0)
        with pytest.raises(TypeError, match="layout='linear'"):
            acc.upload(b.astype(np.float32))
        with pytest.raises(ValueError, match="inner dimensions"):
            acc.matmul(a[:, :8], t)
        t.free()
        t.free()
        with pytest.raises(ValueError, match="has been freed"):
            acc.matmul(a, t)
        with pytest.raises(ValueError, match="layout must be"):
            acc.upload(b, layout="conv")
    with Accelerator.open("emu") as plain:
        with pytest.raises(ValueError, match="no device memory"):
            plain.upload(b)


def test_a_device_reset_loses_resident_tensors_loudly():
    t = FaultyTransport(EmuTransport(SDRAM), FaultPlan())
    acc = Accelerator(t, SDRAM)
    b = RNG.integers(-128, 128, (64, 24), dtype=np.int8)
    a = RNG.integers(-128, 128, (5, 64), dtype=np.int8)
    w = acc.upload(b)
    t._events[("to_device", t._count["to_device"] + 200)] = ["reset"]
    with pytest.raises(DeviceResetError):
        acc.matmul(a, w)
    with pytest.raises(ValueError, match="lost when the device reset"):
        acc.matmul(a, w)
    w2 = acc.upload(b)                   # the session and its memory are usable again
    np.testing.assert_array_equal(acc.matmul(a, w2), a.astype(np.int64) @ b)
    assert acc.device_memory["tensors"] == 1


def test_allocator_first_fit_and_merging():
    al = DeviceMemoryAllocator(1024, 16)
    a, b, c = al.allocate(100), al.allocate(16), al.allocate(200)
    assert (a, b, c) == (0, 112, 128)
    al.release(b)
    assert al.allocate(10) == 112               # the hole, rounded to a line
    al.release(112)
    al.release(a)
    assert al.largest_free() == 1024 - 128 - 208 and al.allocate(128) == 0
    al.release(0)
    al.release(c)
    assert al.largest_free() == 1024
    with pytest.raises(ValueError, match="positive integer"):
        al.allocate(0)


def test_profile_segments_read_the_dma_counters_too():
    names = profile_segments(SDRAM)[0].steps[0].regs
    assert "DMA_BUSY" in names and "DMA_BUSY" not in profile_segments()[0].steps[0].regs
    assert count(SDRAM, profile_segments(SDRAM)).bytes_out > count(SDRAM, profile_segments()).bytes_out


# --- workloads ----------------------------------------------------------------------

def test_encoder_weights_go_up_once_and_results_do_not_change(tmp_path):
    import importlib.util
    from pathlib import Path

    from hetaccel.workloads.bert import BertModel
    from hetaccel.workloads.encoder import QuantizedEncoder
    from hetaccel.workloads.placement import Executor

    spec = importlib.util.spec_from_file_location("tinybert",
                                                  Path(__file__).with_name("tinybert.py"))
    tinybert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tinybert)
    model = BertModel.load(tinybert.write_tiny_model(tmp_path / "tiny"))
    ids = [np.array([2, 10, 6, 3]), np.array([2, 13, 14, 15, 21, 3])]
    cpu = QuantizedEncoder(model, Executor(mode="cpu", config=SDRAM)).forward_batch(ids)
    with Accelerator.open("emu", config=SDRAM) as acc:
        ex = Executor(acc)
        enc = QuantizedEncoder(model, ex)
        resident = acc.device_memory["tensors"]
        assert resident == len(ex.uploads) and all(u["on_device"] for u in ex.uploads)
        uploads = [r for r in acc.profile.ops if r.op == "upload"]
        assert len(uploads) == resident
        out = enc.forward_batch(ids)
        for a, b in zip(out, cpu):
            np.testing.assert_array_equal(a, b)
        # every Linear fetched its weight on the device; nothing was uploaded again
        linears = [d for d in ex.ops if d.weight]
        assert linears and acc.device_memory["tensors"] == resident
        assert sum(r.op == "upload" for r in acc.profile.ops) == resident
        assert all(r.dram_bytes > 0 for r in acc.profile.ops
                   if r.op == "matmul" and r.resident)
        summary = ex.summary()
        assert summary["resident_weights"]["on_device"] == resident
        assert summary["resident_weights"]["device_bytes"] == sum(
            t.nbytes for t in acc._resident.values())
        assert summary["link_bytes"] == sum(d.device_bytes_in + d.device_bytes_out
                                            for d in ex.ops)
        proj = summary["projection"]
        # an image with device memory pays the weights once, apart; one without pays them
        # on every call
        assert proj["config"]["upload_s"] > 0 and proj["config"]["memory_s"] > 0
        assert proj["ulx3s-85f"]["upload_s"] == 0
        without = ex.summary([BoardImage("config", SDRAM.replace(device_memory="none"))])
        assert without["projection"]["config"]["memory_s"] == 0
        # what the host sends for the Linears: their activations only
        sent = [(op_cost(SDRAM, "matmul", d.shape, resident=True).bytes_in,
                 op_cost(SDRAM, "matmul", d.shape).bytes_in) for d in linears]
        assert sum(r for r, _ in sent) < sum(p for _, p in sent)
        ex.release_weights()
        assert acc.device_memory["tensors"] == 0

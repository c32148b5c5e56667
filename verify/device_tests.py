"""cocotb tests of the whole Device through its byte streams, against DeviceModel.

Every request goes through ``rx`` exactly as bytes from a UART would (after the
PHY); every reply byte on ``tx`` is compared with what
:class:`hetaccel.sim.device_model.DeviceModel` answers to the same bytes.  The
config comes from ``HETACCEL_CONFIG`` (JSON).  Run by tests/test_device_cocotb.py.
"""

from __future__ import annotations

import os
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from ..sim import activation_model as am
from ..sim import adam_model
from ..sim.device_model import DeviceModel
from ..spec import (DEVICE_MAGIC, INSTRUCTIONS, AcceleratorConfig, ActivationFunction, MemSpace,
                    Opcode, Status, activate_flags, check_instruction, encode_instruction,
                    identity_words, mem_depth, mem_present, mem_readable, mem_word, pack_words,
                    register_map, unpack_words)
from ..spec.link import ReplyDecoder, encode_request
from .checking import assert_bit_exact

#: cycles a frame may take before the device counts as hung
HANG_CYCLES = 5000


def kick_icarus_comb_blocks(root) -> int:
    """Make Icarus evaluate every ``always @*`` block once at time 0.

    Yosys' Verilog puts a dummy ``dump_module`` register (initialised to 0) into
    every combinational block's sensitivity so it runs at start-up; Icarus 11
    applies that initialiser without an event, so a block whose real inputs
    keep their reset values stays X (e.g. a bank-busy flag computed from
    pipeline valid bits that are all 0).  Toggling the dummy register fixes
    the simulation without touching the design.  Returns how many were kicked.
    """
    kicked = 0
    stack = [root]
    while stack:
        scope = stack.pop()
        try:
            children = list(scope)
        except TypeError:
            continue
        for child in children:
            name = getattr(child, "_name", "")
            if "dump_module" in name:
                child.value = 1
                kicked += 1
            elif type(child).__name__ == "HierarchyObject":
                stack.append(child)
    return kicked


class DeviceDriver:
    """Drives ``rx``, collects ``tx`` and checks every reply against the model."""

    def __init__(self, dut, config: AcceleratorConfig):
        self.dut = dut
        self.config = config
        self.model = DeviceModel(config)
        self.pending: deque[int] = deque()
        self.got = bytearray()
        self.expected = bytearray()
        self.seq = 0
        self.cycles = 0
        self.hangs = 0

    async def start(self):
        if cocotb.SIM_NAME.lower().startswith("icarus"):
            kick_icarus_comb_blocks(self.dut)
        cocotb.start_soon(Clock(self.dut.clk, 10, unit="ns").start())
        self.dut.rx__valid.value = 0
        self.dut.rx__payload.value = 0
        self.dut.tx__ready.value = 1
        self.dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0

    async def step(self):
        """One clock cycle: offer the next request byte, collect a reply byte."""
        dut = self.dut
        await FallingEdge(dut.clk)
        if self.pending:
            dut.rx__valid.value = 1
            dut.rx__payload.value = self.pending[0]
        else:
            dut.rx__valid.value = 0
        await ReadOnly()
        if self.pending and int(dut.rx__ready.value):
            self.pending.popleft()
        # Icarus leaves some always @* outputs X until their inputs first
        # change; an unresolved valid is "no byte" (a hang check catches a
        # stream that never resolves).
        valid = dut.tx__valid.value
        if valid.is_resolvable and int(valid):
            self.got.append(int(dut.tx__payload.value))
        self.cycles += 1

    async def send(self, data: bytes, *, limit: int = HANG_CYCLES, compare: bool = True) -> bytes:
        """Send ``data``, wait for the replies the model predicts; return them.

        Raises AssertionError on a hang (no complete reply within ``limit``
        cycles) or, with ``compare``, on any byte differing from the model.
        ``compare=False`` is for timing-dependent replies (cycle counters):
        the device's bytes are returned and the model's kept as the record,
        so later comparisons stay aligned.
        """
        start = len(self.expected)
        self.expected += self.model.feed(data)
        self.pending.extend(data)
        n = 0
        while self.pending or len(self.got) < len(self.expected):
            await self.step()
            n += 1
            if n > limit + len(data):
                self.hangs += 1
                raise AssertionError(self.debug_state() + 
                    f"device hung: {len(self.got) - start} of {len(self.expected) - start} "
                    f"reply bytes after {n} cycles (request {data.hex()})")
        if not compare:
            got = bytes(self.got[start:])
            self.got[start:] = self.expected[start:]
            return got
        if bytes(self.got) != bytes(self.expected):
            i = next(i for i, (a, b) in enumerate(zip(self.got, self.expected)) if a != b) \
                if any(a != b for a, b in zip(self.got, self.expected)) \
                else min(len(self.got), len(self.expected))
            raise AssertionError(
                f"reply byte {i} differs from the model: got {bytes(self.got[start:]).hex()}, "
                f"expected {bytes(self.expected[start:]).hex()} (request {data.hex()})")
        return bytes(self.got[start:])

    def debug_state(self) -> str:
        """Key internal state for a hang report (best effort)."""
        out = []
        for path in ("cmd.decoder_state", "cmd.q_valid", "cmd.run_gemm", "cmd.q_op0", "cmd.q_n0", "cmd.h_n", "cmd.retire", "cmd.head", "cmd.ex_i", "cmd.wf_busy",
                     "cmd.engine.idle", "cmd.engine.acts__valid", "cmd.engine.acts__ready",
                     "cmd.engine.weights__valid", "cmd.engine.weights__ready"):
            try:
                obj = self.dut
                for part in path.split("."):
                    obj = getattr(obj, part)
                out.append(f"{path}={obj.value}")
            except Exception:   # noqa: BLE001 - diagnostics only
                pass
        return "[" + " ".join(out) + "] "

    async def settle(self, cycles: int = 50):
        """Idle cycles; any reply byte not predicted by the model fails later."""
        for _ in range(cycles):
            await self.step()
        assert bytes(self.got) == bytes(self.expected), (
            f"unexpected reply bytes {bytes(self.got[len(self.expected):]).hex()}")

    def frame(self, opcode, payload=b"") -> bytes:
        self.seq = (self.seq + 1) & 0xFF
        return encode_request(int(opcode), self.seq, payload, max_payload=self.config.max_payload)

    async def request(self, opcode, payload=b"", expect=Status.OK) -> bytes:
        """One instruction; returns the reply payload (status checked)."""
        reply = await self.send(self.frame(opcode, payload))
        frames = ReplyDecoder(self.config.max_payload).feed(reply)
        assert len(frames) == 1, f"expected one reply, got {frames}"
        assert frames[0].code == int(expect), (
            f"{Opcode(opcode).name if opcode in Opcode._value2member_map_ else opcode}: "
            f"status {frames[0].code}, expected {Status(expect).name}")
        return frames[0].payload

    async def write_mem(self, space, addr, values):
        data = pack_words(self.config, space, values)
        wb = len(pack_words(self.config, space, np.zeros_like(np.asarray(values).reshape(
            (-1,) + np.asarray(values).shape[1:])[:1])))
        per = max(1, (self.config.max_payload - 5) // wb)
        for i in range(0, len(data) // wb, per):
            chunk = data[i * wb:(i + per) * wb]
            await self.request(Opcode.WRITE_MEM, encode_instruction(
                Opcode.WRITE_MEM, space=int(space), addr=addr + i, data=chunk))

    async def read_mem(self, space, addr, count) -> np.ndarray:
        wb = mem_word(self.config, space).bytes
        per = max(1, self.config.max_payload // wb)
        out = b""
        for i in range(0, count, per):
            n = min(per, count - i)
            out += await self.request(Opcode.READ_MEM, encode_instruction(
                Opcode.READ_MEM, space=int(space), addr=addr + i, count=n))
        return unpack_words(self.config, space, out)

    async def write_regs(self, values: dict):
        regs = register_map(self.config)
        recs = [{"reg": regs[k].addr, "value": int(v)} for k, v in values.items()]
        per = self.config.max_payload // 6
        for i in range(0, len(recs), per):
            await self.request(Opcode.WRITE_REG, encode_instruction(Opcode.WRITE_REG, *recs[i:i + per]))

    async def read_regs(self, names) -> dict:
        regs = register_map(self.config)
        payload = await self.request(Opcode.READ_REG, encode_instruction(
            Opcode.READ_REG, *({"reg": regs[n].addr} for n in names)))
        return {n: int.from_bytes(payload[4 * i:4 * i + 4], "little") for i, n in enumerate(names)}

    async def check_memories(self):
        """Read every readable scratchpad back; the model comparison checks it.
        (Not the device memory: megabytes, most of them never written, which
        read as whatever the chip powered up with.)"""
        for space in MemSpace:
            if mem_readable(self.config, space) and space != MemSpace.DEVICE:
                await self.read_mem(space, 0, mem_depth(self.config, space))


def _config() -> AcceleratorConfig:
    return AcceleratorConfig.from_json(os.environ["HETACCEL_CONFIG"])


#: One model per simulation: the tests of a module share the DUT, whose reset
#: clears registers but not the scratchpads, so the model must remember them.
_MODELS: dict[str, DeviceModel] = {}


async def _driver(dut) -> DeviceDriver:
    cfg = _config()
    drv = DeviceDriver(dut, cfg)
    key = cfg.to_json()
    if key in _MODELS:
        drv.model = _MODELS[key]
        drv.model.reset()
    else:
        _MODELS[key] = drv.model
    await drv.start()
    return drv


@cocotb.test()
async def identity_and_errors(dut):
    """NOP identity, every error status, memory untouched by rejected frames."""
    drv = await _driver(dut)
    cfg = drv.config
    ident = await drv.request(Opcode.NOP)
    assert int.from_bytes(ident[:4], "little") == DEVICE_MAGIC
    names = ["ID", "VERSION", "CONFIG0", "CONFIG1"]
    got = await drv.read_regs(names)
    assert got == {n: identity_words(cfg)[n] for n in names}
    rng = np.random.default_rng(1)
    a = rng.integers(cfg.operand_min, cfg.operand_max + 1, (cfg.input_depth, cfg.rows))
    await drv.write_mem(MemSpace.INPUT, 0, a)
    # unknown opcode, bad lengths, address ranges, bad CRC, over-long frame
    await drv.request(0x7E, b"", expect=Status.UNKNOWN_OPCODE)
    await drv.request(Opcode.NOP, b"\x00", expect=Status.BAD_LENGTH)
    await drv.request(Opcode.WRITE_MEM, bytes([0, 0, 0, 0, 0]) + bytes(cfg.rows + 1),
                      expect=Status.BAD_LENGTH)
    await drv.request(Opcode.WRITE_MEM, bytes([0, 0xFF, 0, 0, 0]) + bytes(cfg.rows),
                      expect=Status.ADDR_RANGE)
    await drv.request(Opcode.WRITE_MEM, bytes([9, 0, 0, 0, 0]) + bytes(cfg.rows),
                      expect=Status.ADDR_RANGE)
    await drv.request(Opcode.READ_MEM, bytes([0, 0, 0, 0, 0, 0, 0]), expect=Status.BAD_LENGTH)
    await drv.request(Opcode.GEMM, encode_instruction(Opcode.GEMM, a_addr=cfg.input_depth - 1,
                                                      w_addr=0, acc_addr=0, m=2, flags=0),
                      expect=Status.ADDR_RANGE)
    await drv.request(Opcode.WRITE_REG, encode_instruction(Opcode.WRITE_REG,
                                                           {"reg": 0, "value": 5}),
                      expect=Status.ADDR_RANGE)
    await drv.request(Opcode.WRITE_REG, bytes(7), expect=Status.BAD_LENGTH)
    await drv.request(Opcode.READ_REG, bytes([0x99, 0x09]), expect=Status.ADDR_RANGE)
    bad = bytearray(drv.frame(Opcode.NOP))
    bad[-1] ^= 0x40
    await drv.send(bytes(bad))
    await drv.send(b"\x00\x13garbage" + drv.frame(Opcode.NOP))
    await drv.send(bytes([0xA5, 0xFF, 0xFF, 0x01, 0x00]))          # length > max_payload
    back = await drv.read_mem(MemSpace.INPUT, 0, cfg.input_depth)
    assert_bit_exact(a, back, "INPUT after rejected frames")
    await drv.request(Opcode.SYNC)
    await drv.settle()


def range_corners(cfg: AcceleratorConfig) -> list[tuple[int, bytes]]:
    """Frames at both sides of every static check the decoder makes (ranges
    ending exactly at a memory's depth and one past it, zero and maximum
    counts, address fields with high bits set, lengths off by one byte)."""
    out = []
    big = (0xFFFFFFFF, 1 << 16, 1 << 20)
    for space in MemSpace:
        if not mem_present(cfg, space):
            out.append((Opcode.WRITE_MEM, encode_instruction(
                Opcode.WRITE_MEM, space=int(space), addr=0, data=bytes(4))))
            out.append((Opcode.READ_MEM, encode_instruction(
                Opcode.READ_MEM, space=int(space), addr=0, count=1)))
            continue
        d, wb = mem_depth(cfg, space), mem_word(cfg, space).bytes
        nmax = (cfg.max_payload - INSTRUCTIONS[Opcode.WRITE_MEM].fixed_bytes) // wb
        for addr, n in ((d - 1, 1), (d - 2, 2), (d - 1, 2), (d, 1), (0, min(nmax, d)),
                        (d - min(nmax, d), min(nmax, d)), (d + 1 - min(nmax, d), min(nmax, d))) + \
                tuple((a, 1) for a in big):
            if n < 1 or addr < 0:
                continue
            data = bytes((7 * i) & 0xFF for i in range(n * wb))
            out.append((Opcode.WRITE_MEM, encode_instruction(
                Opcode.WRITE_MEM, space=int(space), addr=addr, data=data)))
        out.append((Opcode.WRITE_MEM, encode_instruction(
            Opcode.WRITE_MEM, space=int(space), addr=0, data=bytes(wb + 1))))
        cmax = cfg.max_payload // wb
        for addr, n in ((d - 1, 1), (d - 1, 2), (d, 1), (0, 0), (0, min(cmax, d)),
                        (0, cmax), (0, cmax + 1), (d - min(cmax, d), min(cmax, d)),
                        (d - min(cmax, d) + 1, min(cmax, d)), (0, 0xFFFF)) + \
                tuple((a, 1) for a in big):
            out.append((Opcode.READ_MEM, encode_instruction(
                Opcode.READ_MEM, space=int(space), addr=addr, count=n)))
    out.append((Opcode.READ_MEM, encode_instruction(Opcode.READ_MEM, space=7, addr=0, count=1)))
    ri, rw, ra = cfg.input_depth, cfg.weight_depth, cfg.acc_depth
    for a, w, c, mm in ((ri - 2, rw - cfg.rows, ra - 2, 2), (ri - 1, 0, 0, 2), (0, rw - cfg.rows + 1, 0, 1),
                        (0, 0, ra - 1, 2), (0, 0, 0, 0), (0, 0, 0, ri), (0, 0, 0, ri + 1),
                        (1 << 16, 0, 0, 1), (0, 0xFFFFFFFF, 0, 1), (0, 0, 1 << 20, 1),
                        (0, 0, 0, 0xFFFF)):
        out.append((Opcode.GEMM, encode_instruction(Opcode.GEMM, a_addr=a, w_addr=w, acc_addr=c,
                                                    m=mm, flags=0)))
    if cfg.has_activation:
        ro = cfg.output_depth
        for c, o, mm, pe, fn, fl in ((ra - 2, ro - 2, 2, cfg.act_param_depth - 1, 1, 0),
                                     (ra - 1, 0, 2, 0, 1, 0), (0, ro - 1, 2, 0, 1, 0),
                                     (0, 0, 0, 0, 1, 0), (0, 0, 1, cfg.act_param_depth, 1, 0),
                                     (0, 0, 1, 0, max(ActivationFunction) + 1, 0),
                                     (0, 0, 1, 0, 1, (cfg.act_tables - 1) << 4),
                                     (0, 0, 1, 0, 1, cfg.act_tables << 4),
                                     (1 << 16, 0, 1, 0, 1, 0)):
            out.append((Opcode.ACTIVATE, encode_instruction(
                Opcode.ACTIVATE, acc_addr=c, out_addr=o, m=mm, param_entry=pe, function=fn,
                flags=fl)))
    if cfg.has_adam:
        d = mem_depth(cfg, MemSpace.OPT)
        for addr, n in ((d - 1, 1), (d - 1, 2), (0, 0), (0, d), (0, d + 1), (1 << 16, 1),
                        (0, 0xFFFFFFFF), (0xFFFFFFFF, 2)):
            out.append((Opcode.ADAM, encode_instruction(Opcode.ADAM, addr=addr, count=n)))
    rmax = cfg.max_payload // 4
    out.append((Opcode.READ_REG, encode_instruction(Opcode.READ_REG, *({"reg": 0},) * rmax)))
    out.append((Opcode.READ_REG, encode_instruction(Opcode.READ_REG, *({"reg": 1},) * (rmax + 1))))
    out.append((Opcode.READ_REG, bytes(3)))
    return [(op, pl) for op, pl in out if len(pl) <= cfg.max_payload]


@cocotb.test()
async def range_check_corners(dut):
    """Every static check at its corners answers as spec.check_instruction
    (both sides of each corner occur), and rejected frames change nothing."""
    drv = await _driver(dut)
    cfg = drv.config
    seen = set()
    for op, payload in range_corners(cfg):
        want = check_instruction(cfg, int(op), payload)
        seen.add((int(op), want))
        await drv.request(op, payload, expect=want)
        if op in (Opcode.GEMM, Opcode.ACTIVATE, Opcode.ADAM):
            await drv.request(Opcode.SYNC)
    for op in (Opcode.WRITE_MEM, Opcode.READ_MEM, Opcode.GEMM):
        assert (int(op), Status.OK) in seen and (int(op), Status.ADDR_RANGE) in seen, op
    assert (int(Opcode.READ_MEM), Status.BAD_LENGTH) in seen
    await drv.check_memories()
    await drv.settle()


@cocotb.test()
async def gemm_activation_pipeline(dut):
    """load -> GEMM (overwrite + accumulate) -> ACTIVATE (int8 table, fixed16) -> store."""
    drv = await _driver(dut)
    cfg = drv.config
    rng = np.random.default_rng(2)
    R, C = cfg.rows, cfg.cols
    m = min(cfg.input_depth, cfg.acc_depth) // 2
    k_tiles = 2
    a = rng.integers(cfg.operand_min, cfg.operand_max + 1, (m, k_tiles * R))
    w = rng.integers(cfg.operand_min, cfg.operand_max + 1, (k_tiles * R, C))
    # A tile t lives in INPUT rows t*m.., weights in WEIGHT rows t*R..
    for t in range(k_tiles):
        await drv.write_mem(MemSpace.INPUT, t * m, a[:, t * R:(t + 1) * R])
        await drv.write_mem(MemSpace.WEIGHT, t * R, w[t * R:(t + 1) * R])
    for t in range(k_tiles):
        await drv.request(Opcode.GEMM, encode_instruction(
            Opcode.GEMM, a_addr=t * m, w_addr=t * R, acc_addr=0, m=m, flags=int(t > 0)))
    acc = await drv.read_mem(MemSpace.ACC, 0, m)
    assert_bit_exact(a @ w, acc, "ACC = A @ W")
    if cfg.has_activation:
        mult, shift = am.quantize_multiplier(np.full(C, 1.0 / 512))
        params = np.stack([rng.integers(-500, 500, C), mult, shift])[None]
        await drv.write_mem(MemSpace.ACT_PARAM, 0, params)
        table = am.build_table(ActivationFunction.SIGMOID, 1 / 16, 1 / 128)
        await drv.write_mem(MemSpace.TABLE, 256, table.reshape(-1, 1))
        await drv.request(Opcode.ACTIVATE, encode_instruction(
            Opcode.ACTIVATE, acc_addr=0, out_addr=0, m=m, param_entry=0,
            function=int(ActivationFunction.SIGMOID), flags=activate_flags(0, 1)))
        await drv.request(Opcode.ACTIVATE, encode_instruction(
            Opcode.ACTIVATE, acc_addr=0, out_addr=m, m=m, param_entry=0,
            function=int(ActivationFunction.GELU), flags=activate_flags(1, 0)))
        out = await drv.read_mem(MemSpace.OUTPUT, 0, 2 * m)
        expect = drv.model.mem[MemSpace.OUTPUT][:2 * m]
        assert_bit_exact(expect, out, "OUTPUT")
        assert np.any(out != 0)
    # a GEMM queued behind loads: overlap of the next tile's load with compute
    await drv.request(Opcode.GEMM, encode_instruction(
        Opcode.GEMM, a_addr=0, w_addr=0, acc_addr=m, m=m, flags=0))
    await drv.write_mem(MemSpace.INPUT, m, a[:, R:2 * R])
    await drv.request(Opcode.SYNC)
    await drv.check_memories()
    await drv.settle()


@cocotb.test()
async def adam_pass(dut):
    """ADAM over the OPT scratchpad with hyperparameters from registers."""
    drv = await _driver(dut)
    cfg = drv.config
    if not cfg.has_adam:
        await drv.request(Opcode.ADAM, bytes(8), expect=Status.UNKNOWN_OPCODE)
        return
    rng = np.random.default_rng(3)
    n = mem_depth(cfg, MemSpace.OPT)
    state = rng.standard_normal((n, cfg.adam_lanes, 4)).astype(np.float32)
    state[..., 3] = np.abs(state[..., 3])
    await drv.write_mem(MemSpace.OPT, 0, state)
    for step, decoupled in ((1, False), (2, True)):
        hp = adam_model.hyperparameters(1e-2, (0.9, 0.999), 1e-8, 0.01, step, decoupled)
        await drv.write_regs({f"ADAM_{k.upper()}": v for k, v in hp.items()})
        await drv.request(Opcode.ADAM, encode_instruction(Opcode.ADAM, addr=1, count=n - 1))
    # One READ_REG whose records alternate the register map's high bytes (Adam
    # 0x1xx; counters, identity 0x0xx), compared byte for byte with the model:
    # a record's address is decoded as its bytes arrive, and whether it is a
    # counter (wait for the bank's sweep) must not come from the record before.
    got = await drv.read_regs(["ADAM_BETA1", "FRAMES", "ADAM_MODE", "BYTES_IN", "ID",
                               "ADAM_ONE_MINUS_BETA1", "BYTES_IN"])
    assert got["ADAM_MODE"] == hp["mode"] and got["ID"] == DEVICE_MAGIC, got
    got = await drv.read_mem(MemSpace.OPT, 0, n)
    assert_bit_exact(drv.model.mem[MemSpace.OPT].view(np.float32), got, "OPT after ADAM")
    assert not np.array_equal(got[1:, :, 0], state[1:, :, 0])
    assert_bit_exact(state[0], got[0], "OPT word outside the pass")


@cocotb.test()
async def counters(dut):
    """Byte/frame counters exact, busy counters move, CONTROL clears."""
    drv = await _driver(dut)
    cfg = drv.config
    await drv.write_regs({"CONTROL": 1})
    await drv.request(Opcode.GEMM, encode_instruction(
        Opcode.GEMM, a_addr=0, w_addr=0, acc_addr=0, m=4, flags=0))
    await drv.request(Opcode.SYNC)
    names = ["BYTES_IN", "BYTES_OUT", "FRAMES", "CYCLES", "GEMM_BUSY"]
    regs = register_map(cfg)
    payload = encode_instruction(Opcode.READ_REG, *({"reg": regs[n].addr} for n in names))
    fr = drv.frame(Opcode.READ_REG, payload)
    start = len(drv.expected)
    drv.expected += drv.model.feed(fr)
    drv.pending.extend(fr)
    while drv.pending or len(drv.got) < len(drv.expected):
        await drv.step()
    got = ReplyDecoder(cfg.max_payload).feed(bytes(drv.got[start:]))[0].payload
    want = ReplyDecoder(cfg.max_payload).feed(bytes(drv.expected[start:]))[0].payload
    vals = [int.from_bytes(got[4 * i:4 * i + 4], "little") for i in range(len(names))]
    exp = [int.from_bytes(want[4 * i:4 * i + 4], "little") for i in range(len(names))]
    assert vals[:3] == exp[:3], f"byte/frame counters {vals[:3]} != model {exp[:3]}"
    # the GEMM ran on its own: its busy cycles are the model's; CYCLES also
    # counts the link's cycles, which the model's (the GEMM's own) leave out
    assert vals[4] == exp[4], f"GEMM m=4: GEMM_BUSY RTL {vals[4]}, model {exp[4]}"
    assert vals[3] >= exp[3], f"CYCLES RTL {vals[3]} < the GEMM's own {exp[3]}"
    # keep the reply streams aligned for later checks
    drv.got[start:] = drv.expected[start:]
    # cycle prediction: back-to-back GEMMs (the engine streams them without a drain)
    m = min(8, cfg.input_depth)
    await drv.write_regs({"CONTROL": 1})
    model_busy0 = drv.model.counters["GEMM_BUSY"]
    for t in range(4):
        await drv.request(Opcode.GEMM, encode_instruction(
            Opcode.GEMM, a_addr=0, w_addr=0, acc_addr=0, m=m, flags=1))
    await drv.request(Opcode.SYNC)
    rtl_busy = await _read_counter(drv, "GEMM_BUSY")
    model_busy = drv.model.counters["GEMM_BUSY"] - model_busy0
    dut._log.info("GEMM_BUSY for 4 GEMMs of %d rows: RTL %d, model %d", m, rtl_busy, model_busy)
    # frames arrive slower than these GEMMs run, so each runs alone: exact
    assert rtl_busy == model_busy, (
        f"4 GEMMs m={m}: GEMM_BUSY RTL {rtl_busy}, model {model_busy}")
    # hazards: overwrite INPUT rows a queued GEMM still has to read, read ACC
    # rows it writes; the replies (compared with the in-order model) prove the
    # GEMMs saw the old rows and the read saw their results
    rng = np.random.default_rng(4)
    mm = cfg.input_depth
    await drv.write_regs({"CONTROL": 1})
    # one burst of frames (no waiting for replies): a slow ADAM first keeps the
    # GEMMs queued behind it while the load that overwrites their rows arrives
    burst = b""
    if cfg.has_adam:
        burst += drv.frame(Opcode.ADAM, encode_instruction(
            Opcode.ADAM, addr=0, count=mem_depth(cfg, MemSpace.OPT)))
    for t in range(2):
        burst += drv.frame(Opcode.GEMM, encode_instruction(
            Opcode.GEMM, a_addr=0, w_addr=0, acc_addr=0, m=mm, flags=1))
    row = rng.integers(cfg.operand_min, cfg.operand_max + 1, (1, cfg.rows))
    burst += drv.frame(Opcode.WRITE_MEM, encode_instruction(
        Opcode.WRITE_MEM, space=int(MemSpace.INPUT), addr=mm - 1,
        data=pack_words(cfg, MemSpace.INPUT, row)))
    await drv.send(burst)
    await drv.read_mem(MemSpace.ACC, mm - 1, 1)
    waits = await _read_counter(drv, "HAZARD_WAIT")
    dut._log.info("HAZARD_WAIT after overlapping load/store: %d cycles", waits)
    assert waits > 0 or not cfg.has_adam


async def _read_counters(drv, names) -> dict:
    """Timing-dependent registers: read them in one READ_REG without comparing to the model."""
    regs = register_map(drv.config)
    fr = drv.frame(Opcode.READ_REG, encode_instruction(
        Opcode.READ_REG, *({"reg": regs[n].addr} for n in names)))
    reply = await drv.send(fr, compare=False)
    got = ReplyDecoder(drv.config.max_payload).feed(reply)[0].payload
    return {n: int.from_bytes(got[4 * i:4 * i + 4], "little") for i, n in enumerate(names)}


async def _read_counter(drv, name) -> int:
    """A timing-dependent register: read it without comparing to the model."""
    return (await _read_counters(drv, [name]))[name]

"""HostLink unit checks in the Amaranth simulator (the cocotb runs are in
test_link_cocotb.py): the CRC network against the Python reference, and one
frame of each kind through the link."""

import random

import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from hetaccel.spec.link import Frame, ReplyDecoder, crc16_update, encode_request
from hetaccel.rtl.link import HostLink, crc16_next
from hetaccel.spec import AcceleratorConfig, Opcode, Status


def test_crc_network_matches_reference():
    crc, byte, out = Signal(16), Signal(8), Signal(16)
    m = Module()
    m.d.comb += out.eq(crc16_next(crc, byte))
    sim = Simulator(m)
    rng = random.Random(0)
    vectors = [(0xFFFF, 0x31), (0, 0), (0xFFFF, 0xFF)] + \
        [(rng.randrange(1 << 16), rng.randrange(256)) for _ in range(300)]

    async def tb(ctx):
        for c, b in vectors:
            ctx.set(crc, c)
            ctx.set(byte, b)
            assert ctx.get(out) == crc16_update(c, b), (hex(c), hex(b))

    sim.add_testbench(tb)
    sim.run()


def test_constructor_checks_config():
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        HostLink({"max_payload": 16})


def test_frames_through_link():
    cfg = AcceleratorConfig(max_payload=16, link_timeout_cycles=32)
    dut = HostLink(cfg)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    stream_in = (encode_request(Opcode.WRITE_MEM, 5, b"hello")
                 + encode_request(Opcode.NOP, 6, bytes(17), max_payload=0xFFFF)   # too long
                 + bytes(24)
                 + encode_request(Opcode.READ_REG, 7, b"\x01\x00")[:-1] + b"\x00"  # bad CRC
                 + encode_request(Opcode.SYNC, 8))
    delivered, out = [], bytearray()

    async def driver(ctx):
        for b in stream_in:
            ctx.set(dut.rx.payload, b)
            ctx.set(dut.rx.valid, 1)
            await ctx.tick().until(dut.rx.ready)
        ctx.set(dut.rx.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.tx.ready, 1)
        while True:
            await ctx.tick().until(dut.frame.valid)
            info = ctx.get(dut.frame.payload)
            data = []
            for i in range(info.length):
                ctx.set(dut.payload_addr, i)
                await ctx.tick()
                data.append(ctx.get(dut.payload_data))
            delivered.append((info.opcode, info.seq, bytes(data)))
            ctx.set(dut.frame.ready, 1)
            await ctx.tick()
            ctx.set(dut.frame.ready, 0)
            ctx.set(dut.reply.payload, {"status": Status.OK, "seq": info.seq, "length": 1})
            ctx.set(dut.reply.valid, 1)
            await ctx.tick().until(dut.reply.ready)
            ctx.set(dut.reply.valid, 0)
            ctx.set(dut.reply_data.payload, len(data))
            ctx.set(dut.reply_data.valid, 1)
            await ctx.tick().until(dut.reply_data.ready)
            ctx.set(dut.reply_data.valid, 0)

    async def monitor(ctx):
        async for _, _, v, r, d in ctx.tick().sample(dut.tx.valid, dut.tx.ready, dut.tx.payload):
            if v and r:
                out.append(d)

    sim.add_testbench(driver)
    sim.add_testbench(consumer, background=True)
    sim.add_process(monitor)
    sim.run_until(400e-6)
    assert delivered == [(Opcode.WRITE_MEM, 5, b"hello"), (Opcode.SYNC, 8, b"")]
    # the link's own replies may overtake the consumer's: compare by sequence number
    replies = sorted(ReplyDecoder().feed(bytes(out)), key=lambda f: f.seq)
    assert replies == [Frame(5, Status.OK, b"\x05"), Frame(6, Status.BAD_LENGTH, b""),
                       Frame(7, Status.BAD_CRC, b""), Frame(8, Status.OK, b"\x00")], replies

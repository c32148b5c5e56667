import random

import pytest

from hetaccel.spec.link import (Frame, FrameError, ReplyDecoder, RequestDecoder, crc16,
                                    crc16_update, encode_reply, encode_request)
from hetaccel.sim.link_model import Delivered, LinkModel, LinkReply
from hetaccel.spec import AcceleratorConfig, Opcode, Status


def test_crc_check_value():
    # The catalogued check value of CRC-16/CCITT-FALSE.
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_table_crc_matches_bitwise_reference():
    rng = random.Random(1)
    for _ in range(50):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        crc = 0xFFFF
        for b in data:
            crc = crc16_update(crc, b)
        assert crc16(data) == crc


def test_request_layout():
    f = encode_request(Opcode.READ_REG, 7, b"\x01\x02")
    assert f[0] == 0xA5
    assert f[1:3] == b"\x02\x00"
    assert f[3] == 7 and f[4] == Opcode.READ_REG
    assert f[5:7] == b"\x01\x02"
    assert int.from_bytes(f[7:9], "little") == crc16(f[1:7])
    r = encode_reply(Status.OK, 7)
    assert r[0] == 0x5A and len(r) == 7


@pytest.mark.parametrize("length", [0, 1, 2, 100, 1024])
def test_round_trip(length):
    rng = random.Random(length)
    payload = bytes(rng.randrange(256) for _ in range(length))
    dec = RequestDecoder(max_payload=1024)
    assert dec.feed(encode_request(Opcode.WRITE_MEM, 200, payload)) == \
        [Frame(200, Opcode.WRITE_MEM, payload)]
    rdec = ReplyDecoder()
    got = rdec.feed(encode_reply(Status.ADDR_RANGE, 3, payload))
    assert got == [Frame(3, Status.ADDR_RANGE, payload)]
    assert got[0].status is Status.ADDR_RANGE


def test_incremental_feed_byte_by_byte():
    frames = [encode_request(Opcode.NOP, i, bytes([i] * i)) for i in range(10)]
    dec = RequestDecoder()
    out = []
    for b in b"".join(frames):
        out += dec.feed(bytes([b]))
    assert [f.seq for f in out] == list(range(10))


def test_every_single_bit_flip_is_detected():
    frame = encode_request(Opcode.WRITE_REG, 0x42, bytes(range(20)))
    for i in range(1, len(frame)):          # the sync byte is not covered (it is hunted)
        for bit in range(8):
            bad = bytearray(frame)
            bad[i] ^= 1 << bit
            got = RequestDecoder(max_payload=64).feed(bytes(bad) + b"\x00" * 80)
            assert not any(isinstance(g, Frame) for g in got), (i, bit)
            assert got, (i, bit)


def test_random_burst_corruptions_detected():
    rng = random.Random(5)
    for _ in range(300):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
        frame = bytearray(encode_request(Opcode.WRITE_MEM, rng.randrange(256), payload))
        start = rng.randrange(1, len(frame))
        for j in range(start, min(len(frame), start + 2)):   # bursts <= 16 bits
            frame[j] ^= rng.randrange(1, 256)
        got = RequestDecoder(max_payload=64).feed(bytes(frame) + b"\x00" * 80)
        assert not any(isinstance(g, Frame) for g in got)


def test_truncation_then_good_frame():
    good = encode_request(Opcode.NOP, 9)
    for cut in range(1, 12):
        frame = encode_request(Opcode.WRITE_MEM, 1, bytes(range(10)))[:cut]
        dec = RequestDecoder(max_payload=32)
        got = dec.feed(frame + b"\x00" * (32 + 8) + good)
        assert got[-1] == Frame(9, Opcode.NOP, b""), cut
        assert all(not isinstance(g, Frame) for g in got[:-1])


def test_bad_length_reports_seq_and_resyncs():
    dec = RequestDecoder(max_payload=16)
    bad = encode_request(Opcode.WRITE_MEM, 77, bytes(17))
    got = dec.feed(bad + encode_request(Opcode.NOP, 78))
    assert got[0] == FrameError(Status.BAD_LENGTH, 77, 17)
    assert got[-1] == Frame(78, Opcode.NOP, b"")


def test_garbage_skipped():
    rng = random.Random(3)
    garbage = bytes(rng.choice([0x00, 0x11, 0x5A, 0xFF]) for _ in range(500))
    got = RequestDecoder().feed(garbage + encode_request(Opcode.SYNC, 4))
    assert got == [Frame(4, Opcode.SYNC, b"")]


def test_zero_run_always_resyncs():
    # Whatever state random bytes leave the parser in, max_payload + 8 zeros end it.
    cfg = AcceleratorConfig(max_payload=16)
    rng = random.Random(11)
    for _ in range(200):
        dec = RequestDecoder(max_payload=cfg.max_payload)
        dec.feed(bytes(rng.randrange(256) for _ in range(rng.randrange(60))))
        dec.feed(b"\x00" * (cfg.max_payload + 8))
        assert not dec.in_frame


@pytest.mark.parametrize("bad", [-1, 256, 1.0, "a", None])
def test_encode_rejects_bad_fields(bad):
    with pytest.raises(ValueError, match="seq"):
        encode_request(Opcode.NOP, bad)
    with pytest.raises(ValueError, match="opcode"):
        encode_request(bad, 0)


def test_encode_rejects_long_payload_and_non_bytes():
    with pytest.raises(ValueError, match="max_payload=16"):
        encode_request(Opcode.WRITE_MEM, 0, bytes(17), max_payload=16)
    with pytest.raises(TypeError, match="payload"):
        encode_request(Opcode.WRITE_MEM, 0, "text")


def test_link_model_busy_and_release():
    cfg = AcceleratorConfig(max_payload=16, link_buffers=2)
    m = LinkModel(cfg)
    frames = b"".join(encode_request(Opcode.NOP, i) for i in range(3))
    ev = m.feed(frames)
    assert ev == [Delivered(0, 0, b""), Delivered(0, 1, b""), LinkReply(Status.BUSY, 2)]
    m.release()
    assert m.feed(encode_request(Opcode.NOP, 3)) == [Delivered(0, 3, b"")]
    # a bad CRC is reported as BAD_CRC even when no buffer is free
    bad = bytearray(encode_request(Opcode.NOP, 4))
    bad[-1] ^= 1
    assert m.feed(bytes(bad)) == [LinkReply(Status.BAD_CRC, 4)]


def test_link_model_timeout():
    cfg = AcceleratorConfig(max_payload=16, link_timeout_cycles=100)
    m = LinkModel(cfg)
    f = encode_request(Opcode.WRITE_MEM, 1, b"abc")
    m.feed(f[:4])
    assert not m.idle(99)
    assert m.idle(100)
    assert m.feed(f[4:]) == []            # the tail is garbage now
    assert m.feed(f) == [Delivered(Opcode.WRITE_MEM, 1, b"abc")]
    assert LinkReply(Status.BUSY, 5).encode() == encode_reply(Status.BUSY, 5)


def test_bulk_parse_equals_byte_at_a_time_parse():
    # feed() parses whole frames in bulk; a stream fed one byte at a time only
    # ever takes the byte rules.  Both must give the same items for any
    # mixture of good, corrupted, over-long and truncated frames and garbage.
    rng = random.Random(5)
    stream = bytearray()
    for _ in range(400):
        kind = rng.randrange(6)
        frame = bytearray(encode_reply(rng.randrange(6), rng.randrange(256),
                                       bytes(rng.randrange(256) for _ in range(rng.randrange(40)))))
        if kind == 1:
            frame[rng.randrange(1, len(frame))] ^= 1 << rng.randrange(8)
        elif kind == 2:
            frame = frame[:rng.randrange(1, len(frame))]
        elif kind == 3:
            frame = bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
        stream += frame
    stream = bytes(stream)
    reference = []
    byte_decoder = ReplyDecoder(max_payload=32)
    for b in stream:
        reference += byte_decoder.feed(bytes((b,)))
    bulk_decoder = ReplyDecoder(max_payload=32)
    got, i = [], 0
    while i < len(stream):
        step = rng.choice((1, 7, 100, 5000))
        got += bulk_decoder.feed(stream[i:i + step])
        i += step
    assert got == reference
    assert any(isinstance(x, Frame) for x in got) and any(isinstance(x, FrameError) for x in got)

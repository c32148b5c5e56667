"""SdramModel without a simulator: storage, the fast path against the step
model, refresh placement and the schedule's fixed latencies."""

import random

import numpy as np
import pytest

from hetaccel.sim.sdram_model import BURST_BYTES, Request, SdramModel, Sequential, Strided
from hetaccel.spec.sdram import (A10_ALL_BANKS, CHIPS, ULX3S_CHIPS, SdramCommand,
                                 schedule_parameters, split_address, worst_case)

TIMING = worst_case(ULX3S_CHIPS, 100e6)
CHIP = CHIPS[ULX3S_CHIPS[0]]
P = schedule_parameters(TIMING)


def _model(**kw):
    return SdramModel(CHIP, TIMING, **kw)


def _same(a, b):
    return (a.commands, a.taken, a.issued, a.done, a.end, a.busy_cycles, a.bus_cycles,
            a.refreshes, a.row_misses) == (b.commands, b.taken, b.issued, b.done, b.end,
                                           b.busy_cycles, b.bus_cycles, b.refreshes,
                                           b.row_misses)


# -- storage ----------------------------------------------------------------------------

def test_storage_round_trip_and_layout():
    m = _model()
    rng = random.Random(1)
    v = rng.getrandbits(128)
    m.write(5, v)
    assert m.read_int(5) == v
    beats = m.read(5)
    assert beats.dtype == np.uint16 and [int(b) for b in beats] == \
        [(v >> (16 * k)) & 0xFFFF for k in range(8)]
    # beat k of word a is the 16-bit word 8a+k of the chip
    assert [int(x) for x in m.memory[40:48]] == [int(b) for b in beats]
    raw = bytes(rng.getrandbits(8) for _ in range(3 * BURST_BYTES))
    m.write_bytes(m.words - 3, raw)
    assert m.read_bytes(m.words - 3, 3) == raw
    assert m.read_int(m.words - 3) == int.from_bytes(raw[:16], "little")
    m.write(9, [1, 2, 3, 4, 5, 6, 7, 0xFFFF])
    assert m.read_bytes(9, 1) == bytes([1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 255, 255])
    # the word's chip location is split_address of its 16-bit word address
    assert split_address(CHIP, 8 * 70) == (1, 0, 48)


@pytest.mark.parametrize("bad", [-1, 1 << 21, 1.0, True])
def test_storage_rejects_bad_addresses(bad):
    with pytest.raises(ValueError, match="addr must be"):
        _model().write(bad, 0)


def test_storage_rejects_bad_values():
    m = _model()
    with pytest.raises(ValueError, match="value must be"):
        m.write(0, 1 << 128)
    with pytest.raises(ValueError, match="16 bytes"):
        m.write(0, b"\x00" * 15)
    with pytest.raises(ValueError, match="value must be"):
        m.write(0, [1, 2, 3])
    with pytest.raises(ValueError, match="multiple of 16"):
        m.write_bytes(0, b"\x00" * 17)


def test_constructor_checks():
    with pytest.raises(TypeError, match="chip must be"):
        SdramModel("IS42", TIMING)
    with pytest.raises(ValueError, match="read_delay must be"):
        _model(read_delay=-1)
    with pytest.raises(ValueError, match="rdata_depth must be"):
        _model(rdata_depth=3)


# -- schedule ---------------------------------------------------------------------------

def test_sequential_reads_are_back_to_back_with_fixed_latency():
    for d in (0, 2):
        s = _model(read_delay=d).schedule([Request(a, False, 1) for a in range(300)])
        gaps = [b - a for a, b in zip(s.issued, s.issued[1:])]
        # every 8 cycles, bank changes included; refreshes only break the cadence
        assert gaps.count(8) >= len(gaps) - 2 * (s.refreshes + 1)
        assert all(dn - iss == TIMING.cas_latency + d + 8 for iss, dn in zip(s.issued, s.done))
        assert s.bus_cycles == 8 * 300


def test_write_done_is_last_beat_and_turnarounds():
    m = _model()
    s = m.schedule([Request(3, True, 1), Request(3, False, 1), Request(4, True, 1)])
    w, r, w2 = s.issued
    assert s.done[0] == w + 7
    assert r - w == P["write_to_read"] and w2 - r == P["read_to_write"]


def test_fast_path_equals_step_model_on_long_streams():
    m = _model()
    patterns = [Sequential(0, 6000), Sequential(1234, 4000, write=True),
                Sequential(m.words - 2500, 2500),
                Strided(100, 16, 272, 250), Strided(5, 16, 256, 250),       # 4 KB tile rows
                Strided(0, 3, 64, 1500), Strided(7, 40, 1000, 60, write=True),
                Strided(64 * 4 * 9, 8, 64 * 4, 300)]                       # same bank, new row
    total = 0
    for pat in patterns:
        reqs = [Request(a, pat.write, 0) for a in pat.addresses()]
        slow = m.schedule(reqs)
        fast = m.schedule(reqs, fast=True)
        assert _same(slow, fast), pat
        assert m.transfer_cycles(pat) == slow.cycles
        total += len(reqs)
    assert total > 20000


def test_fast_path_with_paced_and_mixed_requests():
    m = _model()
    rng = random.Random(7)
    for trial in range(20):
        reqs, c, a = [], 0, rng.randrange(m.words - 5000)
        for _ in range(400):
            if rng.random() < 0.05:
                a = rng.randrange(m.words - 5000)
            c += rng.choice((0, 0, 0, 1, 8, 9))
            reqs.append(Request(a, rng.random() < 0.3 and trial % 2 == 0, c))
            a += 1
        assert _same(m.schedule(reqs), m.schedule(reqs, fast=True)), trial


def test_refresh_placement_idle():
    s = _model().schedule([], until=5000)
    pre = [c for c, cmd, _, a in s.commands if cmd == SdramCommand.PRECHARGE]
    ref = [c for c, cmd, _, _ in s.commands if cmd == SdramCommand.AUTO_REFRESH]
    assert len(ref) == s.refreshes == 6
    # due refresh_interval after the last one (the second init refresh was on
    # the pins at -rfc), PRECHARGE all at once, AUTO REFRESH rp later
    assert pre[0] == -TIMING.rfc + P["refresh_interval"]
    assert all(r - p == TIMING.rp for p, r in zip(pre, ref))
    assert [b - a for a, b in zip(ref, ref[1:])] == [P["refresh_interval"] + TIMING.rp] * 5
    assert all(a == A10_ALL_BANKS for c, cmd, _, a in s.commands
               if cmd == SdramCommand.PRECHARGE)
    assert s.busy_cycles == 0


def test_refresh_never_late_under_traffic():
    m = _model()
    rng = random.Random(3)
    reqs = [Request(rng.randrange(m.words), rng.random() < 0.5, 0) for _ in range(3000)]
    s = m.schedule(reqs)
    ref = [-TIMING.rfc] + [c for c, cmd, _, _ in s.commands if cmd == SdramCommand.AUTO_REFRESH]
    assert len(ref) > 20
    assert max(b - a for a, b in zip(ref, ref[1:])) <= TIMING.refi
    # every open row is closed by the PRECHARGE all before its AUTO REFRESH
    cmds = s.commands
    for i, (c, cmd, _, _) in enumerate(cmds):
        if cmd == SdramCommand.AUTO_REFRESH:
            assert cmds[i - 1][1] == SdramCommand.PRECHARGE and cmds[i - 1][3] == A10_ALL_BANKS


def test_back_pressure_delays_reads_but_never_overruns():
    m = _model()
    reqs = [Request(a, False, 0) for a in range(64)]
    stall = m.schedule(reqs, rdata_ready=lambda c: c % 50 == 0)
    free = m.schedule(reqs)
    assert stall.cycles > 40 * 50 and free.cycles < 64 * 8 + 100
    # at most rdata_depth READs ahead of the words taken
    for i, iss in enumerate(stall.issued):
        taken_before = sum(d < iss for d in stall.done)
        assert i - taken_before < m.rdata_depth


def test_bandwidth_targets():
    m = _model()
    seq = Sequential(0, 20000)
    assert 8 * 20000 / m.transfer_cycles(seq) >= 0.95
    tile = Strided(0, 16, 4096 // BURST_BYTES + 16, 1000)
    assert 8 * 16000 / m.transfer_cycles(tile) >= 0.9

"""The SDRAM chip model: data round trip, and each rule on both sides of its edge.

A small command sequencer (``Driver``) plays the controller: a legal sequence
must pass, and the same sequence with one command one cycle early (or one
rule broken) must fail with that rule, naming the cycles involved.  Timings
are each chip's own cycles at 100 MHz, which differ between the parts (tRAS
4/5/5, tRFC 6/7/7, tRC 6/6/7).
"""

from __future__ import annotations

import pytest

from hetaccel.spec.sdram import (A10_ALL_BANKS, CHIPS, MODE_BURST_LENGTH, SdramCommand as C,
                                 SdramTiming, join_address, mode_register, split_address)
from hetaccel.verify.sdram_chip import SdramChipModel, SdramViolation, poison_word

CLOCK = 100e6
BL = MODE_BURST_LENGTH
CHIP_NAMES = sorted(CHIPS)


class Driver:
    """Steps a model the way a controller drives the pins: one call per edge.

    Write data is scheduled for the beat edges when the WRITE is issued; what
    the chip drives is recorded by the edge it is valid for (``got``)."""

    def __init__(self, model: SdramChipModel):
        self.m = model
        self.T = model.timing
        self.data: dict[int, tuple] = {}    # edge -> (dq_o, dqm, dq_oe)
        self.got: dict[int, int] = {}

    @property
    def now(self) -> int:
        return self.m.cycle

    def step(self, cmd=C.NOP, ba=0, a=0, *, dqm=None, dq_oe=None, cke=1) -> int:
        e = self.m.cycle
        dq, wdqm, woe = self.data.pop(e, (0, 0, False))
        out = self.m.step(int(cmd), ba, a, wdqm if dqm is None else dqm, dq,
                          woe if dq_oe is None else dq_oe, cke)
        if out is not None:
            self.got[e + 1] = out
        return e

    def until(self, cycle: int) -> None:
        assert cycle >= self.m.cycle, (cycle, self.m.cycle)
        while self.m.cycle < cycle:
            self.step()

    def at(self, cycle: int, cmd, ba=0, a=0, **kw) -> int:
        self.until(cycle)
        return self.step(cmd, ba, a, **kw)

    def init(self, lmr_first: bool = False) -> int:
        """The datasheet sequence at its minimum spacing; returns the first
        cycle a command may follow."""
        T = self.T
        p = self.at(T.power_up, C.PRECHARGE, a=A10_ALL_BANKS)
        t = p + T.rp
        if lmr_first:
            t = self.at(t, C.LOAD_MODE, a=mode_register(T.cas_latency)) + T.mrd
        r = self.at(t, C.AUTO_REFRESH)
        t = self.at(r + T.rfc, C.AUTO_REFRESH) + T.rfc
        if not lmr_first:
            t = self.at(t, C.LOAD_MODE, a=mode_register(T.cas_latency)) + T.mrd
        assert self.m.initialised
        return t

    def write(self, cycle, bank, col, words, masks=None, dq_oe=True) -> int:
        self.until(cycle)
        for k, w in enumerate(words):
            self.data[cycle + k] = (w, 0 if masks is None else masks[k], dq_oe)
        return self.step(C.WRITE, bank, col)

    def read(self, cycle, bank, col) -> int:
        return self.at(cycle, C.READ, bank, col)

    def burst(self, read_cycle) -> list[int]:
        """The read data of the READ at ``read_cycle`` (steps until it is all out)."""
        first = read_cycle + self.T.cas_latency
        self.until(first + BL)
        return [self.got[first + k] for k in range(BL)]


def ready(name: str, **kw) -> tuple[Driver, int]:
    """A model past a (shortened) power-up and initialisation."""
    kw.setdefault("power_up_cycles", 3)
    d = Driver(SdramChipModel(CHIPS[name], CLOCK, **kw))
    return d, d.init()


def wrap(col: int) -> list[int]:
    base = col & ~(BL - 1)
    return [base | ((col + k) & (BL - 1)) for k in range(BL)]


# -- legal traffic ----------------------------------------------------------------------

@pytest.mark.parametrize("name", CHIP_NAMES)
def test_round_trip_with_masks_and_wrap(name):
    chip = CHIPS[name]
    m = SdramChipModel(chip, CLOCK)                 # the datasheet's own power-up
    assert m.timing == SdramTiming.of(chip, CLOCK, 3)
    d = Driver(m)
    t = d.init()
    T = d.T
    a0 = d.at(t, C.ACTIVE, 0, 0x123)
    a3 = d.at(a0 + T.rrd, C.ACTIVE, 3, 0x1FFF)
    first = [0x1000 + k for k in range(BL)]
    w0 = d.write(a3 + T.rcd, 0, 0, first)
    full = [0xA000 + 0x111 * k for k in range(BL)]
    w1 = d.write(w0 + BL, 3, 8, full)
    # start mid-block: 13 14 15 8 9 10 11 12, some bytes masked
    part = [0x5500 + k for k in range(BL)]
    masks = [0, 1, 2, 3, 0, 0, 2, 1]
    w2 = d.write(w1 + BL, 3, 13, part, masks)
    r0 = d.read(w2 + BL, 0, 0)
    r1 = d.read(r0 + BL, 3, 13)
    assert d.burst(r0) == first
    expect = {c: v for c, v in zip(range(8, 16), full)}
    for col, v, mask in zip(wrap(13), part, masks):
        keep = (0x00FF if mask & 1 else 0) | (0xFF00 if mask & 2 else 0)
        expect[col] = (expect[col] & keep) | (v & ~keep)
    assert d.burst(r1) == [expect[c] for c in wrap(13)]
    for col in range(8, 16):
        assert m.read_word(3, 0x1FFF, col) == expect[col]
    assert m.read_words(join_address(chip, 0, 0x123, 0), BL) == first
    assert m.uninitialised_reads == []
    # a never-written location: poison, recorded, not an error by default
    r2 = d.read(d.now, 0, 0x1F5)
    got = d.burst(r2)
    assert got == [poison_word(chip, 0, 0x123, c) for c in wrap(0x1F5)]
    assert len(set(got)) == BL
    assert m.uninitialised_reads[0] == (r2, 0, 0x123, 0x1F5) and len(m.uninitialised_reads) == BL
    p = d.at(d.now, C.PRECHARGE, a=A10_ALL_BANKS)
    d.at(p + T.rp, C.AUTO_REFRESH)
    assert m.counts[C.READ] == 3 and m.counts[C.WRITE] == 3 and m.counts[C.ACTIVE] == 2
    assert m.counts[C.AUTO_REFRESH] == 3 and m.counts[C.PRECHARGE] == 2
    assert m.counts[C.LOAD_MODE] == 1 and m.cycle == d.now
    assert sum(m.counts.values()) == m.cycle
    assert m.log[-1] == f"cycle {p + T.rp}: AUTO REFRESH" and len(m.log) <= 16


def test_memory_access_for_testbenches():
    chip = CHIPS[CHIP_NAMES[0]]
    m = SdramChipModel(chip, CLOCK)
    addr = join_address(chip, 2, 77, 510)
    m.write_words(addr, [1, 2, 3, 4])           # crosses into the next bank
    assert m.read_words(addr, 4) == [1, 2, 3, 4]
    assert m.read_word(3, 77, 0) == 3 and split_address(chip, addr + 2) == (3, 77, 0)
    assert m.read_word(0, 0, 0) == poison_word(chip, 0, 0, 0)
    with pytest.raises(ValueError, match="must be in"):
        m.write_word(0, 0, 0, 1 << 16)
    with pytest.raises(ValueError, match="must be within"):
        m.write_word(4, 0, 0, 0)
    with pytest.raises(ValueError, match="power_up_cycles must be"):
        SdramChipModel(chip, CLOCK, power_up_cycles=-1)
    with pytest.raises(ValueError, match="CAS latency 2"):
        SdramChipModel(chip, 143e6, cas_latency=2)
    with pytest.raises(ValueError, match="cmd must be"):
        m.step(16, 0, 0, 0, 0, False)


def test_cas_latency_2_reads_a_cycle_earlier():
    chip = CHIPS["MT48LC16M16A2-75"]
    d = Driver(SdramChipModel(chip, CLOCK, cas_latency=2, power_up_cycles=0))
    t = d.init(lmr_first=True)
    a = d.at(t, C.ACTIVE, 1, 5)
    w = d.write(a + d.T.rcd, 1, 3, list(range(10, 18)))
    r = d.read(w + BL, 1, 3)
    assert d.burst(r) == list(range(10, 18))
    assert min(e for e in d.got if e > r) == r + 2


@pytest.mark.parametrize("lmr_first", [False, True])
def test_either_initialisation_order(lmr_first):
    d = Driver(SdramChipModel(CHIPS[CHIP_NAMES[1]], CLOCK, power_up_cycles=2))
    t = d.init(lmr_first)
    d.at(t, C.ACTIVE, 0, 1)


def test_other_banks_work_during_a_burst():
    """ACTIVE and PRECHARGE of other banks may overlap a burst (bank interleaving)."""
    d, t = ready("IS42S16160G-7")
    T = d.T
    a0 = d.at(t, C.ACTIVE, 0, 1)
    a1 = d.at(a0 + T.rrd, C.ACTIVE, 1, 2)
    r = d.read(a1 + T.rcd, 0, 0)
    d.at(r + 1, C.ACTIVE, 2, 3)
    d.at(r + T.ras + 3, C.PRECHARGE, 1)
    d.at(r + BL, C.READ, 2, 8)


# -- timing minimums: at the minimum passes, one cycle earlier fails ---------------------

def _scenario_tRCD(d, t, shift):
    a = d.at(t, C.ACTIVE, 1, 9)
    return d.read(a + d.T.rcd + shift, 1, 0), a, d.T.rcd


def _scenario_tRAS(d, t, shift):
    a = d.at(t, C.ACTIVE, 2, 9)
    return d.at(a + d.T.ras + shift, C.PRECHARGE, 2), a, d.T.ras


def _scenario_tRP(d, t, shift):
    a = d.at(t, C.ACTIVE, 0, 9)
    p = d.at(a + d.T.rc + 3, C.PRECHARGE, 0)
    return d.at(p + d.T.rp + shift, C.ACTIVE, 0, 10), p, d.T.rp


def _scenario_tRP_all(d, t, shift):
    a = d.at(t, C.ACTIVE, 3, 9)
    p = d.at(a + d.T.rc + 3, C.PRECHARGE, a=A10_ALL_BANKS)
    return d.at(p + d.T.rp + shift, C.AUTO_REFRESH), p, d.T.rp


def _scenario_tRC(d, t, shift):
    a = d.at(t, C.ACTIVE, 0, 9)
    d.at(a + d.T.ras, C.PRECHARGE, 0)
    return d.at(a + d.T.rc + shift, C.ACTIVE, 0, 10), a, d.T.rc


def _scenario_tRRD(d, t, shift):
    a = d.at(t, C.ACTIVE, 0, 9)
    return d.at(a + d.T.rrd + shift, C.ACTIVE, 1, 9), a, d.T.rrd


def _scenario_tRFC(d, t, shift):
    r = d.at(t, C.AUTO_REFRESH)
    return d.at(r + d.T.rfc + shift, C.ACTIVE, 0, 1), r, d.T.rfc


def _scenario_tRFC_refresh(d, t, shift):
    r = d.at(t, C.AUTO_REFRESH)
    return d.at(r + d.T.rfc + shift, C.AUTO_REFRESH), r, d.T.rfc


def _scenario_tWR(d, t, shift):
    a = d.at(t, C.ACTIVE, 1, 9)
    w = d.write(a + d.T.rcd, 1, 0, [7] * BL)
    last = w + BL - 1
    return d.at(last + d.T.wr + shift, C.PRECHARGE, 1), last, d.T.wr


def _scenario_tMRD(d, t, shift):
    lmr = d.at(t, C.LOAD_MODE, a=mode_register(3))
    return d.at(lmr + d.T.mrd + shift, C.ACTIVE, 0, 1), lmr, d.T.mrd


def _scenario_read_read(d, t, shift):
    a = d.at(t, C.ACTIVE, 0, 9)
    r = d.read(a + d.T.rcd, 0, 0)
    return d.read(r + BL + shift, 0, 8), r, BL


def _scenario_write_write(d, t, shift):
    a0 = d.at(t, C.ACTIVE, 0, 9)
    a1 = d.at(a0 + d.T.rrd, C.ACTIVE, 1, 9)
    w = d.write(a1 + d.T.rcd, 0, 0, [1] * BL)
    return d.write(w + BL + shift, 1, 0, [2] * BL), w, BL


def _scenario_read_precharge(d, t, shift):
    a = d.at(t, C.ACTIVE, 2, 9)
    r = d.read(a + d.T.rcd, 2, 0)
    return d.at(r + BL + shift, C.PRECHARGE, 2), r, BL


def _scenario_write_precharge_all(d, t, shift):
    a = d.at(t, C.ACTIVE, 2, 9)
    w = d.write(a + d.T.rcd, 2, 0, [1] * BL, masks=[3] * BL)
    d.at(w + 3, C.ACTIVE, 1, 9)                         # during the burst: fine
    d.at(w + BL - 1 + d.T.wr, C.PRECHARGE, 2)
    r = d.read(w + BL - 1 + d.T.wr + 1, 1, 0)
    return d.at(r + BL + shift, C.PRECHARGE, a=A10_ALL_BANKS), r, BL


def _scenario_burst_terminate(d, t, shift):
    a = d.at(t, C.ACTIVE, 0, 9)
    r = d.read(a + d.T.rcd, 0, 0)
    return d.at(r + BL + shift, C.BURST_TERMINATE), r, BL


MINIMUMS = {
    "tRCD": ("tRCD", _scenario_tRCD),
    "tRAS": ("tRAS", _scenario_tRAS),
    "tRP": ("tRP", _scenario_tRP),
    "tRP_all": ("tRP", _scenario_tRP_all),
    "tRC": ("tRC", _scenario_tRC),
    "tRRD": ("tRRD", _scenario_tRRD),
    "tRFC": ("tRFC", _scenario_tRFC),
    "tRFC_refresh": ("tRFC", _scenario_tRFC_refresh),
    "tWR": ("tWR", _scenario_tWR),
    "tMRD": ("tMRD", _scenario_tMRD),
    "read_read": ("burst_interrupted", _scenario_read_read),
    "write_write": ("burst_interrupted", _scenario_write_write),
    "read_precharge": ("burst_interrupted", _scenario_read_precharge),
    "write_precharge_all": ("burst_interrupted", _scenario_write_precharge_all),
    "burst_terminate": ("burst_interrupted", _scenario_burst_terminate),
}


def _minimum_cases():
    for key in MINIMUMS:
        for name in CHIP_NAMES:
            T = SdramTiming.of(CHIPS[name], CLOCK)
            if key == "tRC" and T.rc < T.ras + T.rp:
                continue        # tRAS + tRP already cover tRC for this part at this clock
            yield pytest.param(key, name, id=f"{key}-{name}")


@pytest.mark.parametrize("key,name", list(_minimum_cases()))
def test_minimum_distance(key, name):
    rule, scenario = MINIMUMS[key]
    d, t = ready(name)
    done, earlier, need = scenario(d, t, 0)
    d.until(done + 20)                                  # the minimum is legal
    d, t = ready(name)
    with pytest.raises(SdramViolation) as info:
        scenario(d, t, -1)
    v, msg = info.value, str(info.value)
    assert v.rule == rule, msg
    assert v.cycle == done - 1 == d.now, msg
    assert msg.startswith(f"SDRAM rule {rule} broken at cycle {v.cycle} ({name} at 100 MHz"), msg
    assert f"at cycle {earlier}" in msg and f"needs at least {need} " in msg, msg
    assert f"is {need - 1} cycles after" in msg, msg


def test_each_part_has_its_own_cycles():
    """The model checks the cycles of the chip it models, not the worst case:
    PRECHARGE 4 cycles after ACTIVE and ACTIVE 6 cycles after AUTO REFRESH
    are legal on the ISSI part at 100 MHz and too early on the Micron ones."""
    for name in CHIP_NAMES:
        issi = name.startswith("IS42")
        d, t = ready(name)
        a = d.at(t, C.ACTIVE, 0, 9)
        if issi:
            d.at(a + 4, C.PRECHARGE, 0)
        else:
            _fails("tRAS", lambda: d.at(a + 4, C.PRECHARGE, 0), "tRAS needs at least 5 cycles")
        d, t = ready(name)
        r = d.at(t, C.AUTO_REFRESH)
        if issi:
            d.at(r + 6, C.ACTIVE, 0, 9)
        else:
            _fails("tRFC", lambda: d.at(r + 6, C.ACTIVE, 0, 9), "tRFC needs at least 7 cycles")


# -- maximums and the power-up -----------------------------------------------------------

@pytest.mark.parametrize("name", CHIP_NAMES)
def test_power_up_wait_is_the_chips_own(name):
    m = SdramChipModel(CHIPS[name], CLOCK)
    assert m.timing.power_up == {"IS42S16160G-7": 20000}.get(name, 10000)
    d = Driver(m)
    d.at(m.timing.power_up, C.PRECHARGE, a=A10_ALL_BANKS)
    d = Driver(SdramChipModel(CHIPS[name], CLOCK))
    with pytest.raises(SdramViolation) as info:
        d.at(d.T.power_up - 1, C.PRECHARGE, a=A10_ALL_BANKS)
    v = info.value
    assert v.rule == "init" and v.cycle == d.T.power_up - 1
    assert f"first {d.T.power_up} cycles" in str(v)
    assert f"it comes {v.cycle} cycles after the first edge, needs at least {d.T.power_up}" \
        in str(v)


@pytest.mark.parametrize("name", CHIP_NAMES)
def test_refresh_interval(name):
    d, t = ready(name)
    end_of_init = t - d.T.mrd
    refi = d.T.refi
    r1 = d.at(end_of_init + refi, C.AUTO_REFRESH)           # exactly at the limit
    r2 = d.at(r1 + refi, C.AUTO_REFRESH)
    d.until(r2 + refi + 1)
    with pytest.raises(SdramViolation) as info:
        d.step()                                            # one cycle too many, any command
    v = info.value
    assert v.rule == "refresh" and v.cycle == r2 + refi + 1
    assert f"no AUTO REFRESH for {refi + 1} cycles since the AUTO REFRESH at cycle {r2}" \
        in str(v) and f"at least every {refi} cycles" in str(v)
    # from the end of initialisation to the first one
    d, t = ready(name)
    d.until(t - d.T.mrd + refi)
    with pytest.raises(SdramViolation, match=r"end of initialisation \(LOAD MODE"):
        d.at(t - d.T.mrd + refi + 1, C.AUTO_REFRESH)
    # not checked when strict_refresh is off
    d, t = ready(name, strict_refresh=False)
    d.until(t + 3 * refi)


@pytest.mark.parametrize("name", CHIP_NAMES)
def test_tras_max(name):
    d, t = ready(name, strict_refresh=False)
    a = d.at(t, C.ACTIVE, 1, 9)
    d.at(a + d.T.ras_max, C.PRECHARGE, 1)
    d, t = ready(name, strict_refresh=False)
    a = d.at(t, C.ACTIVE, 1, 9)
    with pytest.raises(SdramViolation) as info:
        d.at(a + d.T.ras_max + 1, C.PRECHARGE, 1)
    v = info.value
    assert v.rule == "tRAS_max" and v.cycle == a + d.T.ras_max + 1
    assert f"open for {d.T.ras_max + 1} cycles since the ACTIVE bank 1 row 0x0009 at " \
           f"cycle {a}" in str(v) and f"at most {d.T.ras_max} cycles" in str(v)


# -- command rules: the legal variant passes, the broken one fails ----------------------

def _fails(rule, fn, *needles):
    with pytest.raises(SdramViolation) as info:
        fn()
    msg = str(info.value)
    assert info.value.rule == rule, msg
    assert f"broken at cycle {info.value.cycle} " in msg, msg
    for n in needles:
        assert n in msg, msg
    return info.value


@pytest.mark.parametrize("name", CHIP_NAMES)
def test_bank_state_rules(name):
    d, t = ready(name)
    T = d.T
    a = d.at(t, C.ACTIVE, 0, 0x42)
    d.read(a + T.rcd, 0, 0)
    _fails("bank_not_open", lambda: d.read(a + T.rcd + BL, 1, 0), "bank 1 is idle")
    d, t = ready(name)
    a = d.at(t, C.ACTIVE, 0, 0x42)
    d.at(a + T.rrd, C.ACTIVE, 1, 0x42)
    _fails("bank_open", lambda: d.at(a + T.rc, C.ACTIVE, 0, 0x43),
           "bank 0 has row 0x0042 open since the ACTIVE bank 0 row 0x0042 at cycle")
    d, t = ready(name)
    a = d.at(t, C.ACTIVE, 3, 7)
    p = d.at(a + T.ras, C.PRECHARGE, 3)
    _fails("bank_not_open", lambda: d.read(p + 5, 3, 0),
           f"idle since the PRECHARGE bank 3 at cycle {p}")
    for cmd in (C.AUTO_REFRESH, C.LOAD_MODE):
        d, t = ready(name)
        a = d.at(t, C.ACTIVE, 2, 7)
        _fails("bank_open", lambda: d.at(a + T.rc, cmd, a=mode_register(3)),
               "needs every bank idle, but bank 2 has row 0x0007 open")


@pytest.mark.parametrize("name", CHIP_NAMES)
def test_read_write_address_rules(name):
    d, t = ready(name)
    a = d.at(t, C.ACTIVE, 0, 1)
    r = d.read(a + d.T.rcd, 0, 0x1FF)
    _fails("auto_precharge", lambda: d.read(r + BL, 0, 3 | A10_ALL_BANKS), "auto precharge")
    d, t = ready(name)
    a = d.at(t, C.ACTIVE, 0, 1)
    _fails("address", lambda: d.write(a + d.T.rcd, 0, 1 << 9, [0] * BL), "A=0x0200")


@pytest.mark.parametrize("name", CHIP_NAMES)
def test_write_data_needs_dq_oe_unless_masked(name):
    d, t = ready(name)
    a = d.at(t, C.ACTIVE, 0, 1)
    w = d.write(a + d.T.rcd, 0, 0, [0x1234] * BL, masks=[3] * BL, dq_oe=False)
    assert d.m.read_word(0, 1, 0) == poison_word(d.m.chip, 0, 1, 0)
    masks = [3, 3, 1, 3, 3, 3, 3, 3]            # beat 2 writes the upper byte
    _fails("write_data", lambda: (d.write(w + BL, 0, 0, [0x1234] * BL, masks, dq_oe=False),
                                  d.until(w + 2 * BL)),
           f"broken at cycle {w + BL + 2} ", "beat 2 of the WRITE bank 0 col 0x000")


@pytest.mark.parametrize("name", CHIP_NAMES)
def test_bus_contention(name):
    d, t = ready(name)
    CL = d.T.cas_latency
    a = d.at(t, C.ACTIVE, 0, 1)
    r = d.read(a + d.T.rcd, 0, 0)
    d.write(r + CL + BL + 1, 0, 8, [5] * BL)        # one turnaround cycle after the data
    d, t = ready(name)
    a = d.at(t, C.ACTIVE, 0, 1)
    r = d.read(a + d.T.rcd, 0, 0)
    _fails("bus_contention", lambda: d.write(r + CL + BL, 0, 8, [5] * BL),
           f"READ bank 0 col 0x000 (row 0x0001) at cycle {r}",
           f"may rise at edge {r + CL + BL + 1} at the earliest")
    # dq_oe during a read beat, without any WRITE
    d, t = ready(name)
    a = d.at(t, C.ACTIVE, 0, 1)
    r = d.read(a + d.T.rcd, 0, 0)
    d.until(r + CL - 1)
    d.step(dq_oe=True)                              # the edge before the first beat
    _fails("bus_contention", lambda: d.step(dq_oe=True))


@pytest.mark.parametrize("name", CHIP_NAMES)
def test_dqm_during_read(name):
    """DQM masks read data two edges later: it must be low from two edges
    before the first beat to two edges before the last."""
    d, t = ready(name)
    CL = d.T.cas_latency
    a = d.at(t, C.ACTIVE, 0, 1)
    r = d.at(a + d.T.rcd, C.READ, 0, 0, dqm=3)      # the edge before that window
    d.until(r + CL + BL - 2)
    d.step(dqm=3)                                   # the edge after it
    assert len(d.burst(r)) == BL
    for edge in (-2, BL - 3):
        d, t = ready(name)
        a = d.at(t, C.ACTIVE, 0, 1)
        r = d.read(a + d.T.rcd, 0, 0)
        d.until(r + CL + edge)
        _fails("dqm_read", lambda: d.step(dqm=2), f"hides beat {edge + 2} of the READ",
               f"DQM must be 0 at edges {r + CL - 2}..{r + CL + BL - 3}")


@pytest.mark.parametrize("name", CHIP_NAMES)
def test_mode_register(name):
    good = mode_register(3)
    bad = {
        mode_register(2): "CAS latency 2 (A[6:4]), needs 3",
        mode_register(3, 4): "burst length 4 (A[2:0]=2), needs 8",
        good | 0b111: "burst length full page",
        good | 0b1000: "interleaved bursts",
        good | 1 << 7: "operating mode 1",
        good | 1 << 9: "single-location writes",
        good | 1 << 11: "reserved A[12:10]=2",
    }
    for lmr_first in (False, True):
        d = Driver(SdramChipModel(CHIPS[name], CLOCK, power_up_cycles=1))
        d.init(lmr_first)
        assert d.m.mode == good
    for value, text in bad.items():
        d = Driver(SdramChipModel(CHIPS[name], CLOCK, power_up_cycles=1))
        p = d.at(1, C.PRECHARGE, a=A10_ALL_BANKS)
        _fails("mode", lambda: d.at(p + d.T.rp, C.LOAD_MODE, a=value), text,
               f"must load 0x{good:03x}")
    d = Driver(SdramChipModel(CHIPS[name], CLOCK, power_up_cycles=1))
    p = d.at(1, C.PRECHARGE, a=A10_ALL_BANKS)
    _fails("mode", lambda: d.at(p + d.T.rp, C.LOAD_MODE, 1, good), "BA=1, needs 0")


@pytest.mark.parametrize("name", CHIP_NAMES)
def test_initialisation_sequence(name):
    T = SdramTiming.of(CHIPS[name], CLOCK)

    def fresh():
        return Driver(SdramChipModel(CHIPS[name], CLOCK, power_up_cycles=4))

    d = fresh()
    _fails("init", lambda: d.at(4, C.PRECHARGE, 0), "must be PRECHARGE with A10 high")
    d = fresh()
    _fails("init", lambda: d.at(4, C.AUTO_REFRESH), "must be PRECHARGE with A10 high")
    d = fresh()
    _fails("init", lambda: d.at(3, C.AUTO_REFRESH), "during power-up")
    # one AUTO REFRESH is not enough
    d = fresh()
    p = d.at(4, C.PRECHARGE, a=A10_ALL_BANKS)
    r = d.at(p + T.rp, C.AUTO_REFRESH)
    lmr = d.at(r + T.rfc, C.LOAD_MODE, a=mode_register(3))
    _fails("init", lambda: d.at(lmr + T.mrd, C.ACTIVE, 0, 1), "AUTO REFRESH (seen 1)")
    # no LOAD MODE
    d = fresh()
    p = d.at(4, C.PRECHARGE, a=A10_ALL_BANKS)
    r = d.at(p + T.rp, C.AUTO_REFRESH)
    r = d.at(r + T.rfc, C.AUTO_REFRESH)
    _fails("init", lambda: d.at(r + T.rfc, C.ACTIVE, 0, 1), "LOAD MODE (not seen)")
    d = fresh()
    p = d.at(4, C.PRECHARGE, a=A10_ALL_BANKS)
    _fails("init", lambda: d.read(p + T.rp, 0, 0), "before initialisation finished")


def test_cke_and_unknown_pins():
    d, t = ready(CHIP_NAMES[0])
    d.until(t + 2)
    _fails("cke", lambda: d.step(cke=0), "CKE low")
    m = SdramChipModel(CHIPS[CHIP_NAMES[0]], CLOCK, power_up_cycles=1)
    m.step(C.NOP, None, None, None, None, False)        # X address on a NOP is fine
    with pytest.raises(SdramViolation) as info:
        m.step(None, 0, 0, 0, 0, False)
    assert info.value.rule == "unknown_pins" and info.value.cycle == 1
    m = SdramChipModel(CHIPS[CHIP_NAMES[0]], CLOCK, power_up_cycles=1)
    m.step(C.NOP, 0, 0, 0, 0, False)
    with pytest.raises(SdramViolation, match="PRECHARGE with BA=0 A=None") as info:
        m.step(C.PRECHARGE, 0, None, 0, 0, False)
    assert info.value.rule == "unknown_pins"


def test_error_on_uninitialised():
    d, t = ready(CHIP_NAMES[2], error_on_uninitialised=True)
    a = d.at(t, C.ACTIVE, 1, 4)
    w = d.write(a + d.T.rcd, 1, 0, list(range(BL)), masks=[0] * 7 + [1])
    r = d.read(w + BL, 1, 0)
    d.until(r + d.T.cas_latency + BL - 2)       # beats 0..6 were fully written
    v = _fails("uninitialised_read", lambda: d.step(),
               "beat 7 of the READ bank 1 col 0x000", "col 0x007", "only partly, with DQM")
    assert v.cycle == r + d.T.cas_latency + BL - 2
    assert d.m.uninitialised_reads == [(r, 1, 4, 7)]


def test_violation_message_lists_recent_commands():
    d, t = ready(CHIP_NAMES[0])
    a = d.at(t, C.ACTIVE, 0, 0x10)
    v = _fails("tRCD", lambda: d.read(a + 1, 0, 4))
    lines = str(v).splitlines()
    assert lines[1] == "last commands:"
    assert lines[-2] == f"  cycle {a}: ACTIVE bank 0 row 0x0010"
    assert lines[-1] == f"  cycle {a + 1}: READ bank 0 col 0x004 (row 0x0010)"
    assert "tRCD needs at least 2 cycles (15 ns)" in lines[0]

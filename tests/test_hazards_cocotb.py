"""The command processor's hazard rules at every edge of a queued range
(verify/hazard_tests.py), on Icarus and Verilator."""

import pytest

from hetaccel.rtl.device import Device
from hetaccel.spec import AcceleratorConfig
from hetaccel.verify.cocotb_runner import SIMULATORS, run_cocotb
from hetaccel.verify.hazard_tests import PLACES, RULES, hazard_cases, targets

#: small, with rows on both sides of every target range, OPT and INPUT deep
#: enough for blockers that outlast every burst, and frames that hold a
#: table slot and two entries more
HAZARD_CONFIG = AcceleratorConfig(rows=4, cols=4, input_depth=128, weight_depth=32,
                                  acc_depth=128, output_depth=32, opt_depth=256, max_k=64,
                                  acc_bits=24, act_param_depth=8, act_tables=3,
                                  max_payload=272, cmd_queue_depth=4)


def test_cases_cover_every_edge():
    """Every (target, space it touches, write/read) pair has a case at every
    place; both sides of both ends of each target range are met."""
    cases = hazard_cases(HAZARD_CONFIG)
    pairs = {(c.target, c.space, c.write) for c in cases}
    assert pairs == set(RULES)
    for op, (_, ranges) in targets(HAZARD_CONFIG).items():
        assert {s for o, s, w in pairs if o == op and w} == set(ranges)
    for pair, rule in RULES.items():
        got = [c for c in cases if (c.target, c.space, c.write) == pair]
        lo, n = targets(HAZARD_CONFIG)[pair[0]][1][pair[1]]
        hi = lo + n - 1
        # (a one-row range has no inside, and some of its places coincide)
        assert len(got) == len(PLACES) or (n == 1 and len(got) >= 5), (pair, got)
        ends = {(c.addr, c.addr + c.count - 1) for c in got}
        assert {lo - 1, lo} <= {last for _, last in ends}, pair
        assert {hi, hi + 1} <= {first for first, _ in ends}, pair
        if rule == "overlap":
            assert {c.conflict for c in got} == {True, False}, pair
            assert all(c.conflict == c.overlap for c in got), pair
        else:
            assert all(c.conflict for c in got), pair


@pytest.mark.parametrize("sim", SIMULATORS)
def test_hazards_at_every_edge(sim):
    # (no waveform on Verilator, whose traces of the device cost more than
    # the simulation; Icarus keeps one)
    run_cocotb(Device(HAZARD_CONFIG), toplevel="hetaccel_device_hazards", sim=sim,
               test_module="hetaccel.verify.hazard_tests", waves=sim != "verilator",
               extra_env={"HETACCEL_CONFIG": HAZARD_CONFIG.to_json()})

"""HostLink on Icarus and Verilator against LinkModel (see verify/link_tests.py)."""

import pytest

from hetaccel.rtl.link import HostLink
from hetaccel.verify.cocotb_runner import SIMULATORS, run_cocotb
from hetaccel.spec import AcceleratorConfig

# Small buffers and a short timeout keep the simulations short; the RTL is
# generic in both.
CFG = AcceleratorConfig(max_payload=32, link_buffers=2, link_timeout_cycles=64)

# >= 1000 random/corrupted frames on Verilator in CI; Icarus runs a shorter mix.
FUZZ_FRAMES = {"icarus": 150, "verilator": 1000}


@pytest.mark.parametrize("sim", SIMULATORS)
def test_host_link(sim):
    run_cocotb(HostLink(CFG), toplevel="hostlink_t", test_module="hetaccel.verify.link_tests",
               sim=sim, extra_env={"HETACCEL_CONFIG": CFG.to_json(),
                                   "LINK_FUZZ_FRAMES": str(FUZZ_FRAMES[sim])})


def test_host_link_three_buffers_long_timeout():
    # A non-power-of-two buffer count and a payload size that is not 2**n.  Icarus
    # only: a second Verilator build would cost CI more than it adds.
    sim = "icarus"
    cfg = AcceleratorConfig(max_payload=40, link_buffers=3, link_timeout_cycles=200)
    run_cocotb(HostLink(cfg), toplevel="hostlink_t3", test_module="hetaccel.verify.link_tests",
               sim=sim, extra_env={"HETACCEL_CONFIG": cfg.to_json(),
                                   "LINK_FUZZ_FRAMES": "100"})

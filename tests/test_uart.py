"""UART PHY: bit-time arithmetic and checks, and cocotb tests of the serial side on
both simulators at the boards' rates (down to 8 cycles a bit, fractional bit times)."""

import pytest

from hetaccel.rtl.uart import UartPhy, UartRx, UartTx
from hetaccel.spec import AcceleratorConfig, link
from hetaccel.spec.boards import BOARDS, default_config
from hetaccel.spec.link import (UART_FRAC_BITS, UART_MAX_BAUD_ERROR, check_uart_bit_time,
                                uart_baud, uart_baud_error, uart_bit_time)
from hetaccel.verify.cocotb_runner import SIMULATORS, run_cocotb

ONE = 1 << UART_FRAC_BITS

# the constructor tests build PHYs only to read their bit time (the warning comes
# when they are collected, which can be during a later test)
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def test_bit_time_at_the_boards_rates():
    # iCEBreaker: 6 Mbaud from the FT2232H at 50.25 MHz is 8.375 cycles, exactly
    assert uart_bit_time(50_250_000, 6_000_000) == 8 * ONE + 3 * ONE // 8
    assert uart_baud(50_250_000, uart_bit_time(50_250_000, 6_000_000)) == 6_000_000
    assert uart_baud_error(50_250_000, 6_000_000) == 0
    # ULX3S: 3 Mbaud at 100 MHz is 33.33 cycles, 33.3125 in sixteenths: 0.06 % fast
    assert uart_bit_time(100_000_000, 3_000_000) == 533
    assert uart_baud_error(100_000_000, 3_000_000) == pytest.approx(1 / 1599, rel=1e-9)
    assert uart_bit_time(48_000_000, 3_000_000) == 16 * ONE


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_board_defaults_have_a_usable_baud(board):
    cfg = default_config(board)
    assert abs(uart_baud_error(cfg.clock_hz, cfg.baud)) <= UART_MAX_BAUD_ERROR
    assert UartPhy(cfg).bit_time == uart_bit_time(cfg.clock_hz, cfg.baud)


@pytest.mark.parametrize("clock_hz,baud,match", [
    (10_000_000, 3_000_000, "at least 4 clock cycles"),
    (100_000_000, 1, "more than the 16777216 a bit timer holds"),
    (0, 9600, "clock_hz must be a positive integer"),
    (50_000_000, 9600.0, "baud must be a positive integer"),
    (50_000_000, True, "baud must be a positive integer"),
])
def test_bit_time_refusals(clock_hz, baud, match):
    with pytest.raises(ValueError, match=match):
        uart_bit_time(clock_hz, baud)


def test_baud_error_refuses_a_baud_above_the_bit_time_resolution():
    with pytest.raises(ValueError, match="too fast for clock_hz=10: under 1/16 clock cycle"):
        uart_baud_error(10, 1000)


def test_bit_time_refuses_a_baud_error_above_the_maximum(monkeypatch):
    # With 1/16-cycle bit times and at least 4 cycles a bit the rounding error
    # is at most 1/128 = 0.78 %, under the 2 % allowed; a tighter maximum
    # shows the check.
    assert 0.5 / (link.UART_MIN_CLOCKS_PER_BIT * ONE) <= UART_MAX_BAUD_ERROR
    monkeypatch.setattr(link, "UART_MAX_BAUD_ERROR", 0.0005)
    with pytest.raises(ValueError, match=r"3001876 baud, \+0.06% off \(at most 0.05% allowed\)"):
        uart_bit_time(100_000_000, 3_000_000)
    assert uart_bit_time(50_250_000, 6_000_000) == 134


def test_constructors():
    assert UartRx(AcceleratorConfig(clock_hz=48_000_000, baud=3_000_000)).bit_time == 16 * ONE
    assert UartTx(divisor=7).bit_time == 7 * ONE
    assert UartPhy(bit_time=134).bit_time == 134
    with pytest.raises(TypeError, match="exactly one"):
        UartRx()
    with pytest.raises(TypeError, match="exactly one"):
        UartRx(divisor=8, bit_time=128)
    with pytest.raises(ValueError, match="divisor must be an integer in"):
        UartTx(divisor=2)
    with pytest.raises(ValueError, match="divisor must be an integer in"):
        UartTx(divisor=8.375)
    with pytest.raises(ValueError, match="bit_time must be an integer number of 1/16"):
        UartRx(bit_time=4 * ONE - 1)
    with pytest.raises(ValueError, match="bit_time must be an integer"):
        check_uart_bit_time(133.5)
    with pytest.raises(ValueError, match="at least 4 clock cycles"):
        UartPhy(AcceleratorConfig(clock_hz=10_000_000, baud=3_000_000))
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        UartPhy({"baud": 9600})


#: fixed-point bit times under test: a whole 8 cycles, the iCEBreaker's 8.375
#: (6 Mbaud at 50.25 MHz) and the ULX3S's 33.3125 (3 Mbaud at 100 MHz)
BIT_TIMES = {
    "div8": 8 * ONE,
    "icebreaker-6M": uart_bit_time(50_250_000, 6_000_000),
    "ulx3s-3M": uart_bit_time(100_000_000, 3_000_000),
}


@pytest.mark.parametrize("rate", BIT_TIMES)
@pytest.mark.parametrize("sim", SIMULATORS)
def test_uart_phy(sim, rate):
    bit_time = BIT_TIMES[rate]
    phy = UartPhy(divisor=bit_time // ONE) if bit_time % ONE == 0 else UartPhy(bit_time=bit_time)
    # one toplevel name per bit time: concurrent runs never share a Verilog file
    run_cocotb(phy, toplevel=f"uartphy_t{bit_time}", test_module="hetaccel.verify.uart_tests",
               sim=sim, extra_env={"UART_BIT_TIME": str(bit_time)}, timescale=("1ps", "1ps"))

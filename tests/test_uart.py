"""UART PHY: divisor checks, and cocotb tests of the serial side on both simulators."""

import pytest

from hetaccel.rtl.uart import UartPhy, UartRx, UartTx, uart_divisor
from hetaccel.verify.cocotb_runner import SIMULATORS, run_cocotb
from hetaccel.spec import AcceleratorConfig


def test_divisor_from_config():
    assert uart_divisor(48_000_000, 3_000_000) == 16
    assert UartRx(AcceleratorConfig(clock_hz=48_000_000, baud=3_000_000)).divisor == 16
    assert UartTx(divisor=7).divisor == 7


@pytest.mark.parametrize("clock_hz,baud,match", [
    (10_000_000, 3_000_000, "at least 4 clock cycles"),
    (25_000_000, 5_000_000, None),          # exact: divisor 5
    (13_000_000, 2_000_000, "off"),          # 6.5 -> 6 or 7: 7.7 % / 7.1 % off
])
def test_divisor_limits(clock_hz, baud, match):
    if match is None:
        assert uart_divisor(clock_hz, baud) == 5
    else:
        with pytest.raises(ValueError, match=match):
            uart_divisor(clock_hz, baud)


def test_constructor_checks():
    with pytest.raises(TypeError, match="exactly one"):
        UartRx()
    with pytest.raises(ValueError, match="divisor"):
        UartTx(divisor=2)
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        UartPhy({"baud": 9600})


@pytest.mark.parametrize("sim", SIMULATORS)
def test_uart_phy(sim):
    div = 12
    run_cocotb(UartPhy(divisor=div), toplevel="uartphy_t", test_module="hetaccel.verify.uart_tests",
               sim=sim, extra_env={"UART_DIVISOR": str(div)}, timescale=("1ps", "1ps"))

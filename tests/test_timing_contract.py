"""The generators refuse to elaborate a pipeline the contract does not time.

The device model and the planner count cycles with ``hetaccel.spec.timing``;
each test moves one contract value and shows that the unit built with it
names that value when it refuses, then that the unit elaborates again once
the contract is restored.
"""

import gc

import pytest
from amaranth.hdl import Fragment

from hetaccel.rtl.activation import ActivationUnit
from hetaccel.rtl.adam import AdamUnit
from hetaccel.rtl.contract import ContractMismatch
from hetaccel.rtl.fp32 import FPAdd, FPDiv, FPMul, FPSqrt
from hetaccel.rtl.systolic import SystolicArray
from hetaccel.spec import AcceleratorConfig, timing

# A refused elaboration leaves the submodules it had made unelaborated.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

SMALL = AcceleratorConfig(rows=2, cols=2, adam_lanes=1)


def _elaborate(unit):
    Fragment.get(unit, None)


def _refuses_then_recovers(monkeypatch, make, name, value, match):
    monkeypatch.setattr(timing, name, value)
    with pytest.raises(ContractMismatch, match=match):
        _elaborate(make())
    monkeypatch.undo()
    _elaborate(make())
    gc.collect()    # the refused unit's leftovers warn when collected: here, under the filter


@pytest.mark.parametrize("delta", [1, -1])
def test_activation_unit_is_timed_by_the_contract(monkeypatch, delta):
    _refuses_then_recovers(
        monkeypatch, lambda: ActivationUnit(SMALL), "ACTIVATION_LATENCY",
        timing.ACTIVATION_LATENCY + delta,
        rf"ActivationUnit: the pipeline built is 13 cycles deep, but "
        rf"hetaccel\.spec\.timing\.ACTIVATION_LATENCY is {13 + delta}")


def test_folded_activation_unit_is_timed_by_the_contract(monkeypatch):
    real = timing.activation_latency
    _refuses_then_recovers(
        monkeypatch, lambda: ActivationUnit(SMALL.replace(act_lanes=1)), "activation_latency",
        lambda config: real(config) + 1,
        r"ActivationUnit: the pipeline built is 14 cycles deep, but "
        r"hetaccel\.spec\.timing\.activation_latency\(config\) is 15")


@pytest.mark.parametrize("name,block", [("FP_MUL_LATENCY", "FPMul"), ("FP_ADD_LATENCY", "FPAdd"),
                                        ("FP_SQRT_LATENCY", "FPSqrt"),
                                        ("FP_DIV_LATENCY", "FPDiv")])
def test_adam_unit_checks_each_fp32_block_against_the_contract(monkeypatch, name, block):
    built = getattr(timing, name)
    _refuses_then_recovers(
        monkeypatch, lambda: AdamUnit(SMALL), name, built + 1,
        rf"AdamUnit's {block}: the pipeline built is {built} cycles deep, but "
        rf"hetaccel\.spec\.timing\.{name} is {built + 1}")


def test_adam_unit_checks_its_whole_pipeline_against_the_contract(monkeypatch):
    built = timing.adam_latency()
    _refuses_then_recovers(
        monkeypatch, lambda: AdamUnit(SMALL), "adam_latency", lambda: built + 2,
        rf"AdamUnit: the pipeline built is {built} cycles deep, but "
        rf"hetaccel\.spec\.timing\.adam_latency\(\) is {built + 2}")


def test_systolic_array_is_timed_by_the_contract(monkeypatch):
    real = timing.array_latency
    _refuses_then_recovers(
        monkeypatch, lambda: SystolicArray(SMALL), "array_latency", lambda c: real(c) + 1,
        r"SystolicArray: the pipeline built is 4 cycles deep, but "
        r"hetaccel\.spec\.timing\.array_latency\(config\) is 5")


@pytest.mark.parametrize("cls,make", [(FPMul, FPMul), (FPAdd, FPAdd),
                                      (FPSqrt, lambda: FPSqrt(iters_per_stage=3)),
                                      (FPDiv, lambda: FPDiv(iters_per_stage=13))])
def test_fp32_blocks_build_the_latency_they_promise(monkeypatch, cls, make):
    # Every unit built from them delays its other operands by ``latency``.
    unit = make()
    _elaborate(unit)
    promised = unit.latency
    bad = make()
    monkeypatch.setattr(bad, "latency", promised + 1)
    with pytest.raises(ContractMismatch, match=rf"{cls.__name__}: the pipeline built is "
                                               rf"{promised} cycles deep, but its latency is "
                                               rf"{promised + 1}"):
        _elaborate(bad)
    gc.collect()


import math

import pytest

from hetaccel.spec import AcceleratorConfig, DEFAULT_CONFIG, Opcode, Status, min_acc_bits


def test_default_config_is_valid_and_round_trips():
    assert AcceleratorConfig.from_json(DEFAULT_CONFIG.to_json()) == DEFAULT_CONFIG


@pytest.mark.parametrize("field,value", [
    ("rows", 0), ("rows", 65), ("cols", -1), ("operand_bits", 1), ("acc_bits", 100),
    ("max_k", 0), ("input_depth", 3), ("adam_lanes", 0), ("rows", 2.5), ("rows", True),
    ("has_adam", 1), ("max_payload", 8),
])
def test_invalid_field_names_field_and_range(field, value):
    with pytest.raises(ValueError, match=field):
        AcceleratorConfig(**{field: value})


def test_narrow_accumulator_is_rejected_not_wrapped():
    # 8-bit operands over K=4096 need 2*8 + 12 = 28 bits.
    assert min_acc_bits(8, 4096) == 28
    AcceleratorConfig(acc_bits=28, max_k=4096)
    with pytest.raises(ValueError, match=r"acc_bits must be at least .* = 28"):
        AcceleratorConfig(acc_bits=27, max_k=4096)
    with pytest.raises(ValueError, match="acc_bits"):
        AcceleratorConfig(acc_bits=32, max_k=1 << 17)


def test_min_acc_bits_is_tight():
    # The extreme sum K * (-128 * -128) fits in exactly min_acc_bits signed bits.
    for k in (1, 2, 3, 255, 256, 4096):
        bits = min_acc_bits(8, k)
        worst = k * 128 * 128
        assert worst <= (1 << (bits - 1)) - 1 or k == 1
        assert bits == 16 + math.ceil(math.log2(k))


def test_act_lanes_folds_the_activation_unit():
    assert (DEFAULT_CONFIG.act_physical_lanes, DEFAULT_CONFIG.act_fold) == (DEFAULT_CONFIG.cols, 1)
    cfg = AcceleratorConfig(cols=16, act_lanes=4)
    assert (cfg.lanes, cfg.act_physical_lanes, cfg.act_fold) == (16, 4, 4)
    assert AcceleratorConfig.from_json(cfg.to_json()) == cfg
    assert AcceleratorConfig(cols=12, act_lanes=3).act_fold == 4
    assert AcceleratorConfig(cols=8, act_lanes=8).act_fold == 1
    for bad in (3, 32, 6):
        with pytest.raises(ValueError, match=r"act_lanes must divide cols=16 into a power-of-two "
                                             rf"number of beats .*16, 8, 4, 2, 1\), not {bad}$"):
            AcceleratorConfig(cols=16, act_lanes=bad)
    with pytest.raises(ValueError, match=r"act_lanes must divide cols=12 .*\(0 for one lane per "
                                         r"column, or 12, 6, 3\), not 4$"):
        AcceleratorConfig(cols=12, act_lanes=4)   # 3 beats
    for bad in (-1, 65, 2.0, True):
        with pytest.raises(ValueError, match="act_lanes must be"):
            AcceleratorConfig(cols=16, act_lanes=bad)


def test_unknown_field_is_rejected():
    with pytest.raises(ValueError, match="unknown config field"):
        AcceleratorConfig.from_dict({"rows": 4, "colums": 4})


def test_opcodes_and_statuses_are_unique_bytes():
    for enum in (Opcode, Status):
        values = [e.value for e in enum]
        assert len(values) == len(set(values))
        assert all(0 <= v <= 0xFF for v in values)


def test_package_reexports_every_public_name_of_its_modules():
    # hetaccel.spec lists its names one by one (so static checkers see them):
    # a name added to a submodule's __all__ must be re-exported too.
    from hetaccel import spec
    for mod in (spec.codes, spec.config, spec.formats, spec.isa, spec.pwl):
        missing = set(mod.__all__) - set(spec.__all__)
        assert not missing, f"{mod.__name__} names not re-exported by hetaccel.spec: {missing}"
    for name in spec.__all__:
        assert getattr(spec, name) is not None
    assert len(set(spec.__all__)) == len(spec.__all__)

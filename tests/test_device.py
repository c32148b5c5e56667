"""ISA tables (spec.py), docs/isa.md and the device model: fast checks."""

from pathlib import Path

import numpy as np
import pytest

from hetaccel import spec
from hetaccel.spec import (AcceleratorConfig, MemSpace, Opcode, Status, check_instruction,
                           encode_instruction, decode_instruction)

ROOT = Path(spec.__file__).resolve().parent
SMALL = AcceleratorConfig(rows=4, cols=4, input_depth=16, weight_depth=16, acc_depth=16,
                          output_depth=16, opt_depth=16, max_k=64, acc_bits=24,
                          act_param_depth=4, act_tables=3, max_payload=64)


def test_docs_isa_is_generated_from_spec():
    assert (ROOT / "docs" / "isa.md").read_text() == spec.isa_markdown(), (
        "docs/isa.md is stale: regenerate it from spec.isa_markdown()")


def test_every_opcode_has_a_format_and_round_trips():
    for op, fmt in spec.INSTRUCTIONS.items():
        assert op in Opcode
        if fmt.tail == "repeat":
            recs = [{n: i + 1 for i, (n, _) in enumerate(fmt.fields)}] * 3
            payload = encode_instruction(op, *recs)
            assert decode_instruction(op, payload) == {"records": recs}
        else:
            fields = {n: (1 << (8 * b)) - 1 for n, b in fmt.fields}
            data = b"\x01\x02" if fmt.tail == "words" else b""
            payload = encode_instruction(op, data=data, **fields)
            expect = dict(fields, data=data) if data else fields
            assert decode_instruction(op, payload) == expect
    assert set(spec.INSTRUCTIONS) == set(Opcode)


def test_encode_rejects_bad_fields():
    with pytest.raises(ValueError, match="GEMM.m"):
        encode_instruction(Opcode.GEMM, a_addr=0, w_addr=0, acc_addr=0, m=1 << 16, flags=0)
    with pytest.raises(ValueError, match="needs field 'flags'"):
        encode_instruction(Opcode.GEMM, a_addr=0, w_addr=0, acc_addr=0, m=1)
    with pytest.raises(ValueError, match="no field"):
        encode_instruction(Opcode.ADAM, addr=0, count=1, bogus=2)


def test_register_map_and_identity_round_trip():
    for cfg in (spec.DEFAULT_CONFIG, SMALL, SMALL.replace(has_adam=False, has_activation=False)):
        regs = spec.register_map(cfg)
        assert len({r.addr for r in regs.values()}) == len(regs)
        assert all(0 <= r.addr < 1 << 16 for r in regs.values())
        assert ("ADAM_MODE" in regs) == cfg.has_adam
        back = spec.config_from_identity(spec.identity_words(cfg))
        for name in ("rows", "cols", "acc_bits", "input_depth", "opt_depth", "has_adam",
                     "max_payload", "cmd_queue_depth", "act_tables", "max_k"):
            assert getattr(back, name) == getattr(cfg, name), name


def test_pack_unpack_words():
    a = np.arange(-8, 8, dtype=np.int64).reshape(4, 4)
    assert spec.unpack_words(SMALL, MemSpace.ACC, spec.pack_words(SMALL, MemSpace.ACC, a)).tolist() == a.tolist()
    with pytest.raises(ValueError, match="does not fit in 8 signed bits"):
        spec.pack_words(SMALL, MemSpace.INPUT, np.array([0, 0, 128, 0]))
    with pytest.raises(ValueError, match="4 elements"):
        spec.pack_words(SMALL, MemSpace.INPUT, np.zeros(3, dtype=np.int8))


def _gemm(**kw):
    f = dict(a_addr=0, w_addr=0, acc_addr=0, m=1, flags=0)
    f.update(kw)
    return encode_instruction(Opcode.GEMM, **f)


@pytest.mark.parametrize("opcode,payload,status", [
    (0x7F, b"", Status.UNKNOWN_OPCODE),
    (Opcode.NOP, b"x", Status.BAD_LENGTH),
    (Opcode.GEMM, _gemm()[:-1], Status.BAD_LENGTH),
    (Opcode.GEMM, _gemm(), Status.OK),
    (Opcode.GEMM, _gemm(m=0), Status.ADDR_RANGE),
    (Opcode.GEMM, _gemm(a_addr=15, m=1), Status.OK),
    (Opcode.GEMM, _gemm(a_addr=15, m=2), Status.ADDR_RANGE),
    (Opcode.GEMM, _gemm(w_addr=13), Status.ADDR_RANGE),
    (Opcode.GEMM, _gemm(acc_addr=0xFFFFFFFF), Status.ADDR_RANGE),
    (Opcode.WRITE_MEM, bytes([9, 0, 0, 0, 0, 1, 2, 3, 4]), Status.ADDR_RANGE),
    (Opcode.WRITE_MEM, bytes([0, 0, 0, 0, 0, 1, 2, 3]), Status.BAD_LENGTH),
    (Opcode.WRITE_MEM, bytes([0, 15, 0, 0, 0, 1, 2, 3, 4]), Status.OK),
    (Opcode.WRITE_MEM, bytes([0, 15, 0, 0, 0]) + bytes(8), Status.ADDR_RANGE),
    (Opcode.READ_MEM, bytes([2, 0, 0, 0, 0, 4, 0]), Status.OK),          # 4*16 == max_payload
    (Opcode.READ_MEM, bytes([2, 0, 0, 0, 0, 5, 0]), Status.BAD_LENGTH),
    (Opcode.READ_MEM, bytes([2, 0, 0, 0, 0, 0, 0]), Status.BAD_LENGTH),
    (Opcode.READ_REG, bytes([0x80, 0x00]), Status.OK),
    (Opcode.READ_REG, bytes([0x7F, 0x00]), Status.ADDR_RANGE),
    (Opcode.WRITE_REG, bytes([0x00, 0x00, 1, 2, 3, 4]), Status.ADDR_RANGE),
    (Opcode.WRITE_REG, bytes([0x40, 0x00, 1, 0, 0, 0]), Status.OK),
])
def test_check_instruction(opcode, payload, status):
    assert check_instruction(SMALL, opcode, payload) == status


def test_absent_units_are_unknown_opcodes():
    bare = SMALL.replace(has_adam=False, has_activation=False)
    assert check_instruction(bare, Opcode.ADAM, bytes(8)) == Status.UNKNOWN_OPCODE
    assert check_instruction(bare, Opcode.ACTIVATE, bytes(14)) == Status.UNKNOWN_OPCODE
    assert check_instruction(bare, Opcode.WRITE_MEM,
                             bytes([int(MemSpace.OPT), 0, 0, 0, 0]) + bytes(16)) == Status.ADDR_RANGE

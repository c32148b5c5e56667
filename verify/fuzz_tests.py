"""Protocol fuzzing of the whole Device against DeviceModel (cocotb).

Random instructions (fields mostly in range, often not), corrupted frames
(bit flips anywhere, truncations, inserted and appended garbage), garbage runs
and resynchronising zero runs go in through ``rx``; every reply byte is
compared with :class:`hetaccel.sim.device_model.DeviceModel`.  Every
``HETACCEL_FUZZ_CHECK_EVERY`` units all readable scratchpads are read back and
compared with the model (so a rejected frame that touched memory is caught),
and at the end the device must answer a good NOP.

Environment: ``HETACCEL_CONFIG`` (JSON), ``HETACCEL_FUZZ_FRAMES`` (default
1000), ``HETACCEL_FUZZ_SEED``, ``HETACCEL_FUZZ_RESULT`` (path: the figures are
written there as JSON: frames, hangs, silent_corruptions, rejected, ...).
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np

from ..spec import (ADAM_HYPERPARAMETERS, AcceleratorConfig, MemSpace, Opcode, Status,
                    encode_instruction, identity_words, mem_depth, mem_word, register_map)
from ..spec.link import ReplyDecoder, encode_request
from .device_tests import DeviceDriver

#: registers whose value does not depend on timing (safe to compare exactly)
_STABLE_REGS = (*identity_words(AcceleratorConfig()), "FRAMES", "BYTES_OUT", "CONTROL")


class FrameFuzzer:
    """Random request units (bytes) for one config."""

    def __init__(self, config: AcceleratorConfig, rng: np.random.Generator):
        self.cfg = config
        self.rng = rng
        self.regs = register_map(config)
        self.seq = 0

    def _u(self, lo, hi):
        return int(self.rng.integers(lo, hi + 1))

    def _addr(self, depth, n=1, top=0xFFFFFFFF):
        """Mostly inside ``depth`` for ``n`` words, sometimes just past, rarely huge."""
        r = self.rng.random()
        if r < 0.8:
            return self._u(0, max(0, depth - n))
        if r < 0.95:
            return self._u(max(0, depth - n), depth + 2)
        return self._u(0, top)

    def _count(self, hi):
        r = self.rng.random()
        if r < 0.85:
            return self._u(1, max(1, hi))
        return self._u(0, 0xFFFF) if r < 0.9 else 0

    def instruction(self) -> tuple[int, bytes]:
        cfg, rng = self.cfg, self.rng
        ops = list(Opcode)
        if rng.random() < 0.05:
            return self._u(0, 255), bytes(rng.integers(0, 256, self._u(0, 20), dtype=np.uint8))
        op = ops[self._u(0, len(ops) - 1)]
        if op in (Opcode.NOP, Opcode.SYNC):
            return op, b""
        if op == Opcode.WRITE_MEM:
            space = self._u(0, 7) if rng.random() < 0.1 else self._u(0, 6)
            try:
                wb = mem_word(cfg, space).bytes
                depth = max(1, mem_depth(cfg, space))
            except ValueError:
                wb, depth = 4, 16
            nmax = max(1, (cfg.max_payload - 5) // wb)
            n = self._u(1, min(nmax, depth))
            data = bytes(rng.integers(0, 256, n * wb, dtype=np.uint8))
            if rng.random() < 0.1:
                data = data[:-1] if len(data) > 1 and rng.random() < 0.5 else data + b"\x00"
            if space == MemSpace.OPT and rng.random() < 0.7:
                # mostly sane floats so ADAM exercises the arithmetic, not only NaNs
                vals = rng.standard_normal(len(data) // 4).astype(np.float32)
                data = vals.tobytes() + data[4 * len(vals):]
            return op, encode_instruction(op, space=space, addr=self._addr(depth, n), data=data)
        if op == Opcode.READ_MEM:
            space = self._u(0, 7) if rng.random() < 0.1 else self._u(0, 4)
            try:
                wb = mem_word(cfg, space).bytes
                depth = max(1, mem_depth(cfg, space))
            except ValueError:
                wb, depth = 4, 16
            n = self._count(min(depth, max(1, cfg.max_payload // wb)))
            return op, encode_instruction(op, space=space, addr=self._addr(depth, max(1, n)),
                                          count=n)
        if op == Opcode.WRITE_REG:
            names = [f"ADAM_{h.upper()}" for h in ADAM_HYPERPARAMETERS] + ["ADAM_MODE", "CONTROL"]
            names = [n for n in names if n in self.regs]
            recs = []
            for _ in range(self._u(1, 3)):
                r = rng.random()
                if r < 0.8 and names:
                    name = names[self._u(0, len(names) - 1)]
                    if name.startswith("ADAM_") and name != "ADAM_MODE" and rng.random() < 0.8:
                        val = int(np.float32(rng.uniform(0.0, 1.0)).view(np.uint32))
                    else:
                        val = self._u(0, 0xFFFFFFFF)
                    recs.append({"reg": self.regs[name].addr, "value": val})
                else:
                    recs.append({"reg": self._u(0, 0x1FF), "value": self._u(0, 0xFFFFFFFF)})
            payload = encode_instruction(op, *recs)
            if rng.random() < 0.1:
                payload = payload[:-self._u(1, 5)]
            return op, payload
        if op == Opcode.READ_REG:
            recs = []
            for _ in range(self._u(1, 4)):
                if rng.random() < 0.85:
                    name = _STABLE_REGS[self._u(0, len(_STABLE_REGS) - 1)]
                    recs.append({"reg": self.regs[name].addr})
                else:
                    addr = self._u(0, 0x1FF)
                    r = next((r for r in self.regs.values() if r.addr == addr), None)
                    if r is None or r.name in _STABLE_REGS or r.name.startswith("ADAM_"):
                        recs.append({"reg": addr})
            if not recs:
                recs = [{"reg": 0}]
            payload = encode_instruction(op, *recs)
            if rng.random() < 0.05:
                payload += b"\x00"
            return op, payload
        if op == Opcode.GEMM:
            mm = self._count(cfg.input_depth // 2)
            f = dict(a_addr=self._addr(cfg.input_depth, mm), w_addr=self._addr(cfg.weight_depth, cfg.rows),
                     acc_addr=self._addr(cfg.acc_depth, mm), m=mm, flags=self._u(0, 255))
        elif op == Opcode.ACTIVATE:
            mm = self._count(cfg.acc_depth // 2)
            f = dict(acc_addr=self._addr(cfg.acc_depth, mm), out_addr=self._addr(cfg.output_depth, mm),
                     m=mm, param_entry=self._addr(cfg.act_param_depth, 1, 0xFFFF), function=self._u(0, 6),
                     flags=self._u(0, 255) if rng.random() < 0.3 else
                     (self._u(0, 1) | self._u(0, cfg.act_tables - 1) << 4))
        elif op in (Opcode.LOAD, Opcode.STORE):
            # (UNKNOWN_OPCODE on a device without device memory, checked like
            # any other instruction on one with it)
            space = self._u(0, 7)
            depth = mem_depth(cfg, space) or 16
            n = self._count(depth)
            line = cfg.memory.line_bytes if cfg.memory else 16
            f = dict(space=space, addr=self._addr(depth, n),
                     dram_addr=self._u(0, 1 << 20) * (line if rng.random() < 0.8 else 1),
                     count=n)
        else:   # ADAM
            depth = mem_depth(cfg, MemSpace.OPT) or 16
            n = self._count(depth)
            f = dict(addr=self._addr(depth, n), count=n)
        payload = encode_instruction(op, **f)
        if rng.random() < 0.05:
            payload = payload[:-1] if rng.random() < 0.5 else payload + b"\x00"
        return op, payload

    def frame(self, opcode: int, payload: bytes) -> bytes:
        self.seq = (self.seq + 1) & 0xFF
        return encode_request(opcode, self.seq, payload)

    def unit(self) -> tuple[str, bytes]:
        """One fuzz unit: (kind, bytes)."""
        rng = self.rng
        r = rng.random()
        op, payload = self.instruction()
        data = bytearray(self.frame(op, payload))
        if r < 0.70:
            return "frame", bytes(data)
        if r < 0.80:
            i = self._u(0, len(data) - 1)
            data[i] ^= 1 << self._u(0, 7)
            return "bitflip", bytes(data)
        if r < 0.86:
            return "truncated", bytes(data[:self._u(1, len(data) - 1)])
        if r < 0.92:
            junk = bytes(rng.integers(0, 256, self._u(1, 12), dtype=np.uint8))
            return "garbage+frame", junk + bytes(data)
        if r < 0.97:
            return "garbage", bytes(rng.integers(0, 256, self._u(1, 40), dtype=np.uint8))
        return "resync", bytes(self.cfg.max_payload + 8)


async def run_fuzz(dut, config: AcceleratorConfig, frames: int, seed: int,
                   check_every: int) -> dict:
    drv = DeviceDriver(dut, config)
    await drv.start()
    fz = FrameFuzzer(config, np.random.default_rng(seed))
    stats = {"frames": 0, "hangs": 0, "silent_corruptions": 0, "rejected": 0, "mismatches": 0,
             "accepted": 0, "checkpoints": 0, "seed": seed, "first_failure": None}
    kinds: dict[str, int] = {}

    def account(reply: bytes):
        for fr in ReplyDecoder(0xFFFF).feed(reply):
            if fr.code == Status.OK:
                stats["accepted"] += 1
            else:
                stats["rejected"] += 1

    phase = {"checkpoint": False}

    async def checkpoint():
        # READ_MEM replies are compared with the model's memories byte by byte
        phase["checkpoint"] = True
        stats["checkpoints"] += 1
        await drv.check_memories()
        phase["checkpoint"] = False

    try:
        for i in range(frames):
            kind, data = fz.unit()
            kinds[kind] = kinds.get(kind, 0) + 1
            reply = await drv.send(data)
            account(reply)
            stats["frames"] += 1
            if check_every and (i + 1) % check_every == 0:
                # a resync run first: the readback must start at a frame boundary
                await drv.send(bytes(config.max_payload + 8))
                await checkpoint()
        await drv.send(bytes(config.max_payload + 8))
        await checkpoint()
        nop = await drv.request(Opcode.NOP)
        assert int.from_bytes(nop[:4], "little") == 0x48414343
        await drv.settle(100)
    except AssertionError as exc:
        msg = str(exc)
        stats["first_failure"] = msg[:2000]
        if "hung" in msg:
            stats["hangs"] += 1
        elif phase["checkpoint"]:
            stats["silent_corruptions"] += 1
        else:
            stats["mismatches"] += 1
    stats["kinds"] = kinds
    stats["cycles"] = drv.cycles
    return stats


@cocotb.test()
async def fuzz(dut):
    """>= 1000 random and corrupted frames: 0 hangs, replies and memory equal the model."""
    cfg = AcceleratorConfig.from_json(os.environ["HETACCEL_CONFIG"])
    frames = int(os.environ.get("HETACCEL_FUZZ_FRAMES", "1000"))
    seed = int(os.environ.get("HETACCEL_FUZZ_SEED", "1"))
    every = int(os.environ.get("HETACCEL_FUZZ_CHECK_EVERY", "250"))
    stats = await run_fuzz(dut, cfg, frames, seed, every)
    path = os.environ.get("HETACCEL_FUZZ_RESULT")
    if path:
        with open(path, "w") as f:
            json.dump(stats, f)
    assert stats["first_failure"] is None, stats["first_failure"]
    assert stats["frames"] == frames and stats["hangs"] == 0
    dut._log.info("fuzz: %s", json.dumps(stats))

"""Drive one valid/ready input stream and drain one output stream in cocotb.

The unit benches (activation, Adam) all need the same loop: offer words on an
``In`` stream with random gaps, take results from an ``Out`` stream with
random stalls, and give up with a clear message when nothing moves.  It lives
here once so every bench applies the same handshake rules.
"""

from __future__ import annotations

from cocotb.triggers import FallingEdge, ReadOnly

__all__ = ["pump"]


async def pump(dut, words: list[int], rng, *, gap: float = 0.0, stall: float = 0.0,
               limit: int, inp: str = "inp", out: str = "out", each_cycle=None):
    """Send ``words`` on stream ``inp`` and collect as many payloads from ``out``.

    Parameters
    ----------
    dut
        The cocotb handle; the streams are its ``<name>__valid``,
        ``<name>__ready`` and ``<name>__payload`` signals.
    words : list of int
        Packed input payloads, sent in order.
    rng : numpy.random.Generator
        Source of the random gaps and stalls.
    gap, stall : float
        Probability that the source withholds ``valid`` / the sink withholds
        ``ready`` on a cycle.
    limit : int
        Cycles after which the run fails as "no progress".
    each_cycle : callable(sent, received), optional
        Called in the read-only phase of every cycle (before this cycle's
        transfers are counted), for per-cycle invariants such as ``idle``.

    Returns
    -------
    (outputs, cycles)
        The raw output payloads in order and the cycles taken.  Starts and
        ends on a falling edge with both handshakes released.
    """
    in_valid, in_ready = getattr(dut, f"{inp}__valid"), getattr(dut, f"{inp}__ready")
    in_payload = getattr(dut, f"{inp}__payload")
    out_valid, out_ready = getattr(dut, f"{out}__valid"), getattr(dut, f"{out}__ready")
    out_payload = getattr(dut, f"{out}__payload")
    outs: list[int] = []
    sent = cycles = 0
    while len(outs) < len(words):
        valid = sent < len(words) and rng.random() >= gap
        ready = rng.random() >= stall
        in_valid.value = int(valid)
        if valid:
            in_payload.value = words[sent]
        out_ready.value = int(ready)
        await ReadOnly()
        if each_cycle is not None:
            each_cycle(sent, len(outs))
        if valid and int(in_ready.value):
            sent += 1
        if ready and int(out_valid.value):
            outs.append(int(out_payload.value))
        await FallingEdge(dut.clk)
        cycles += 1
        assert cycles < limit, \
            f"no progress: {len(outs)} of {len(words)} outputs after {cycles} cycles"
    in_valid.value = 0
    out_ready.value = 0
    return outs, cycles

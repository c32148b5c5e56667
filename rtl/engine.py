"""The GEMM engine: a :class:`~hetaccel.rtl.systolic.SystolicArray` plus its accumulator memory.

Each result row of the array is written (``accumulate=0``) or added
(``accumulate=1``) into the accumulator row ``acc_addr``; a long K is therefore
a sequence of tiles whose rows accumulate into the same rows.  The array and
the layouts of its streams are in :mod:`hetaccel.rtl.systolic`; the cycle model
(including the read-modify-write hazard stall) is
:mod:`hetaccel.sim.systolic_model`.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import AcceleratorConfig
from ..spec.timing import RMW_WINDOW, array_latency
from .bram import RegisteredReadPort
from .systolic import (SystolicArray, _check_config, acc_row_layout, acc_write_layout,
                       act_layout, weight_layout)

__all__ = ["MatmulEngine", "RMW_WINDOW", "next_layout"]


def _kept(m: Module, name: str, value) -> Signal:
    """``value`` through a wire synthesis keeps (``keep``): a boundary ABC
    cannot merge logic across, so the LUT structure around it is the one
    written here rather than one chosen without routing delays."""
    s = Signal(value.shape(), name=name, attrs={"keep": 1})
    m.d.comb += s.eq(value)
    return s


def _eq_tree(m: Module, a, b, name: str) -> Signal:
    """``a == b`` as a tree of LUT-sized parts, each a kept wire.

    ABC (Yosys' ``abc9``, which models no routing delay) otherwise maps a
    wide equality as a chain of LUTs, one per bit pair, through their fast
    input: on the UP5K each link of that chain is a routing hop.  Kept wires
    are boundaries it cannot merge across, so the compare is two pair
    levels (two bit pairs per LUT, then one LUT per four of those).
    """
    assert len(a) == len(b)
    level = [_kept(m, f"{name}_p{i // 2}", a[i:i + 2] == b[i:i + 2])
             for i in range(0, len(a), 2)]
    while len(level) > 1:
        level = [_kept(m, f"{name}_a{len(level)}_{i // 4}", Cat(*level[i:i + 4]).all())
                 for i in range(0, len(level), 4)]
    return level[0]


def next_layout(config: AcceleratorConfig) -> data.StructLayout:
    """``{valid, accumulate, acc_addr}``: :attr:`MatmulEngine.acts_next`."""
    return data.StructLayout({"valid": 1, "accumulate": 1, "acc_addr": range(config.acc_depth)})


class MatmulEngine(wiring.Component):
    """Systolic array plus accumulator memory: the GEMM engine of the device.

    Parameters
    ----------
    config : AcceleratorConfig
    lookahead : bool
        Build the ``acts_next`` port (below).  Without it the producer's row
        is compared with the hazard window combinationally (the skid's row is
        always decided a cycle ahead).

    Attributes
    ----------
    weights : In(stream.Signature(weight_layout(config)))
        Weight-tile rows, exactly as :attr:`SystolicArray.weights`.
    acts : In(stream.Signature(act_layout(config)))
        Activation rows with ``last`` / ``accumulate`` / ``acc_addr``, as
        :attr:`SystolicArray.acts`.  Each row's result is written
        (``accumulate=0``) or added (``accumulate=1``, wrapping modulo
        ``2**acc_bits``, which a legal K <= max_k never reaches) into
        accumulator row ``acc_addr``.  ``ready`` is a flip-flop: high while
        the engine's one-row skid buffer is empty.  A row the array cannot
        take in the cycle it is transferred (weights not loaded, or the
        hazard stall) waits there, and ``ready`` is low until it has entered;
        with the next row already offered, the array sees no gap.  The hazard
        stall: an accumulating row does not enter the array while a row with
        the same ``acc_addr`` entered in one of the previous
        :data:`~hetaccel.spec.timing.RMW_WINDOW` cycles (its sum has not
        landed yet when this row's read-modify-write reads the memory).  Rows
        of one tile go to distinct addresses and, with ``rows >= RMW_WINDOW +
        1``, the weight load between two tiles already spaces rows of the same
        address far enough apart, so a GEMM at full rate only meets the stall
        on arrays with fewer rows (see
        :func:`~hetaccel.spec.timing.row_schedule`).  The engine never
        back-pressures the array: a row entering it in cycle ``c`` (``active``)
        lands in the memory at the clock edge ending cycle
        ``c + rows + cols + 1``; a read accepted from cycle ``c + rows + cols + 2``
        on sees it.
    rd_addr : In(stream.Signature(range(acc_depth)))
        Read request: accumulator row address.  Ready when ``rd_data`` is empty
        or being consumed (``~rd_data.valid | rd_data.ready``), so reads stream
        at one row per cycle.
    rd_data : Out(stream.Signature(acc_row_layout(config)))
        The row read, offered the cycle after its address was accepted, held
        until taken.  Reads see every write that landed before the cycle the
        read's address was accepted (not one landing in that same cycle).
    acc_write : In(stream.Signature(acc_write_layout(config)))
        ``{addr, data}``: overwrite accumulator row ``addr`` (e.g. to preload a
        bias).  Ready only while no row is inside its read-modify-write (from
        the cycle its accumulator row is read, two cycles before it is on the
        array's ``results``, to the cycle its sum is written), so a row reads
        every ``acc_write`` accepted before it reached that window, and a
        result write never competes with one.  With ``rows + cols = 2`` the
        window starts in the cycle a row is accepted, so ``ready`` then also
        drops combinationally with ``acts.valid & acts.ready``.  ``idle``
        implies ready.
    idle : Out(1)
        No activation row in the skid buffer or the array and no result
        waiting to be written: every accepted row has landed in the memory.  Wait for it before
        reading rows a GEMM writes.  A flip-flop (decided a cycle ahead).
    active : Out(1)
        An activation row enters the array this cycle (one row = ``rows x
        cols`` MACs), for utilisation counters.
    acts_next : In(next_layout(config))
        Only with ``lookahead=True``: ``valid`` high in a cycle whose clock
        edge loads a new row into the producer's ``acts`` register, with that
        row's ``accumulate`` and ``acc_addr``.  The engine then decides the
        producer's next row's hazard stall a cycle ahead, from flip-flops, so
        the address compares are off the path from ``acts`` to the array's
        accept (the iCE40 critical path otherwise).  So every valid row on
        ``acts`` must be the one announced by ``acts_next`` in the cycle
        before, or the row offered and not taken in the cycle before (the
        stream rule); ``acts_next.valid`` may only be high while
        ``~acts.valid | acts.ready``.  So ``acts.valid`` in the next cycle is
        exactly ``acts_next.valid | (acts.valid & ~acts.ready)``: the engine
        also uses this to keep the array's ``acts.valid`` in a flip-flop.
        The stall and every cycle are the same as without it.
    """

    def __init__(self, config: AcceleratorConfig, *, lookahead: bool = False):
        self._config = _check_config(config, "MatmulEngine")
        if not isinstance(lookahead, bool):
            raise TypeError(f"lookahead must be a bool, not {lookahead!r}")
        self._lookahead = lookahead
        ports = {
            "weights": In(stream.Signature(weight_layout(config))),
            "acts": In(stream.Signature(act_layout(config))),
            "rd_addr": In(stream.Signature(range(config.acc_depth))),
            "rd_data": Out(stream.Signature(acc_row_layout(config))),
            "acc_write": In(stream.Signature(acc_write_layout(config))),
            "idle": Out(1),
            "active": Out(1),
        }
        if lookahead:
            ports["acts_next"] = In(next_layout(config))
        super().__init__(ports)

    @property
    def lookahead(self) -> bool:
        return self._lookahead

    @property
    def config(self) -> AcceleratorConfig:
        return self._config

    def elaborate(self, platform):
        cfg = self._config
        L = array_latency(cfg)
        m = Module()
        m.submodules.array = array = SystolicArray(cfg)
        wiring.connect(m, wiring.flipped(self.weights), array.weights)

        # ---- input skid buffer ------------------------------------------------
        # acts.ready is a flip-flop (the skid is empty), so neither the hazard
        # decision below nor the array's readiness reaches the producer's logic
        # combinationally.  A row the array cannot take yet waits in the skid;
        # with the producer's next row already waiting, the array sees no gap.
        W = RMW_WINDOW
        acts = self.acts
        sk_valid = Signal()
        sk_payload = Signal(act_layout(cfg), reset_less=True)
        cur_valid = sk_valid | acts.valid
        cur = Signal(act_layout(cfg))
        cur_last = _kept(m, "cur_last", cur.last)
        m.d.comb += [cur.eq(acts.payload), acts.ready.eq(~sk_valid)]
        with m.If(sk_valid):
            m.d.comb += cur.eq(sk_payload)

        # ---- RMW hazard stall ------------------------------------------------
        # The read-modify-write below has no forwarding: a row reads its
        # accumulator row before the sums of the W = RMW_WINDOW rows accepted
        # just ahead of it have been written (see RMW_WINDOW).  So an
        # accumulating row waits (in the skid) while one of the last W rows
        # the array accepted has its address.  Nothing else enters meanwhile,
        # so the stall only ever clears.
        #
        # The window: (h_valid[k], h_addr[k]) is the row accepted k+1 cycles
        # ago.  The address compares are kept off the accept path: the
        # verdicts are flip-flops computed a cycle ahead, for the row that
        # will be in the skid and (with `lookahead`) for the row the producer
        # will offer, and updated as the window shifts.  match_p[k] / match_s[k]
        # say the producer's / skid's row has the address of the valid window
        # entry k.  The skid's row never matches entry 0: it was not accepted
        # in the previous cycle, and nothing else was (match_s[0] = 0).
        accept = Signal()
        h_valid = [Signal(name=f"haz_valid{k}") for k in range(W)]
        h_addr = [Signal(range(cfg.acc_depth), name=f"haz_addr{k}") for k in range(W)]
        m.d.sync += [h_valid[0].eq(accept), h_addr[0].eq(cur.acc_addr)]
        m.d.sync += [h_valid[k].eq(h_valid[k - 1]) for k in range(1, W)]
        m.d.sync += [h_addr[k].eq(h_addr[k - 1]) for k in range(1, W)]

        pa = acts.payload.acc_addr
        sa = sk_payload.acc_addr
        if self._lookahead:
            # The producer's row's matches, registered: a new row (acts_next)
            # is compared with the window as it will be after this edge; a
            # held row's matches shift with the window.  Entry 0 after the
            # edge is the row accepted now (`cur`), so `accept` is the last
            # input of these flip-flops.
            nx = self.acts_next
            # match_p[0] is the stored compare gated by h_valid[0] (which is
            # `accept` registered), so `accept` reaches none of these
            # flip-flops
            mp0_raw = Signal(name="haz_mp0")
            match_p = [h_valid[0] & mp0_raw] + [Signal(name=f"haz_mp{k}") for k in range(1, W)]
            hz_p = Signal()
            # n_*: the new row's matches, p_*: the held row's (entry 0, then
            # the entries that were 0..W-2 before this edge)
            n_m0 = Mux(sk_valid, _eq_tree(m, nx.acc_addr, sa, "eq_nx_sk"),
                       _eq_tree(m, nx.acc_addr, pa, "eq_nx_p"))
            p_m0 = _eq_tree(m, pa, sa, "eq_p_sk")
            eq_h = [_eq_tree(m, nx.acc_addr, h_addr[k - 1], f"eq_nx_h{k - 1}")
                    for k in range(1, W)]
            n_mk = [h_valid[k - 1] & eq for k, eq in zip(range(1, W), eq_h)]
            p_mk = match_p[:W - 1]
            mp_next = [accept & Mux(nx.valid, n_m0, p_m0)]
            mp_next += [Mux(nx.valid, n, p) for n, p in zip(n_mk, p_mk)]
            m.d.sync += mp0_raw.eq(Mux(nx.valid, n_m0, p_m0))
            m.d.sync += [match_p[k].eq(mp_next[k]) for k in range(1, W)]
            hz_p_next = Signal()
            m.d.comb += hz_p_next.eq(Mux(nx.valid, nx.accumulate, acts.payload.accumulate)
                                     & Cat(*mp_next).any())
            m.d.sync += hz_p.eq(hz_p_next)
        else:
            match_p = [h_valid[k] & (h_addr[k] == pa) for k in range(W)]
            hz_p = acts.payload.accumulate & Cat(*match_p).any()
        # The skid's row: captured now (the producer's row, not accepted, so
        # entry 0 after the edge is empty) or held (its matches shift).
        match_s = [Const(0)] + [Signal(name=f"haz_ms{k}") for k in range(1, W)]
        ms_next = [Const(0)] + [Mux(sk_valid, match_s[k - 1], match_p[k - 1])
                                for k in range(1, W)]
        m.d.sync += [match_s[k].eq(ms_next[k]) for k in range(1, W)]
        hz_s = Signal()
        hz_s_next = _kept(m, "hz_s_next",           # (one LUT input of go's logic)
                          Mux(sk_valid, sk_payload.accumulate, acts.payload.accumulate)
                          & Cat(*ms_next[1:]).any())
        m.d.sync += hz_s.eq(hz_s_next)
        hazard = Signal()
        m.d.comb += hazard.eq(Mux(sk_valid, hz_s, hz_p))
        m.d.comb += [
            array.acts.payload.eq(cur),
            # (a kept wire: one LUT, which the array's bank flag and bank
            # select enables take as one input next to its accept)
            array.acts.payload.last.eq(cur_last),
            accept.eq(array.acts.valid & array.acts.ready),
        ]
        if self._lookahead:
            # The array's acts.valid (cur_valid & ~hazard) is a flip-flop too,
            # set from the next skid state, the producer's next valid (an
            # announced row, or its row held while the skid is full) and the
            # next verdicts, so the array's accept logic (its bank flags and
            # shift enables) starts at a register.
            #   go' = sk_valid' ? ~hz_s' : acts.valid' & ~hz_p'
            #   sk_valid' = cur_valid & ~accept
            #   acts.valid' = nx.valid | acts.valid & sk_valid
            # written out for the four values of the two latest inputs,
            # `accept` and `nx.valid`, so that they meet only in the last LUTs.
            # The parts are kept wires (_kept), a LUT each: the address
            # compares (2 levels), the new row's matches with `na` folded in
            # (3); ABC then maps the last two levels (the go for either value
            # of accept, then accept): 5 LUT levels from the engine's
            # flip-flops (7 when ABC chose the structure).
            go = Signal()
            na, pacc = nx.accumulate, acts.payload.accumulate
            nxv = _kept(m, "haz_nx_valid", nx.valid)
            # the new row accumulates and matches entry 0 / a later entry
            new_m0 = _kept(m, "haz_new_m0", na & n_m0)
            # (na & h_valid first, so each term is two inputs of one LUT)
            new_rest = _kept(m, "haz_new_rest", Cat(*[
                _kept(m, f"haz_na_hv{k - 1}", na & h_valid[k - 1]) & eq
                for k, eq in zip(range(1, W), eq_h)]).any())
            p_rest = Cat(*p_mk).any()
            go_acc_held = _kept(m, "go_acc_held",
                                acts.valid & sk_valid & ~(pacc & (p_m0 | p_rest)))
            cv = _kept(m, "haz_cur_valid", cur_valid)
            go_if_acc = Mux(nxv, ~(new_m0 | new_rest), go_acc_held)
            go_if_wait = Mux(nxv, Mux(cv, ~hz_s_next, ~new_rest), cv & ~hz_s_next)
            m.d.sync += go.eq(Mux(accept, go_if_acc, go_if_wait))
            m.d.comb += array.acts.valid.eq(go)
        else:
            m.d.comb += array.acts.valid.eq(cur_valid & ~hazard)
        with m.If(sk_valid & accept):
            m.d.sync += sk_valid.eq(0)
        with m.If(~sk_valid & acts.valid & ~accept):
            m.d.sync += [sk_valid.eq(1), sk_payload.eq(acts.payload)]
        # Each accepted row's `accumulate`, L cycles on: the flag of the row in R1.
        acc_sh = [Signal(name=f"acc_sh{k}") for k in range(L)]
        m.d.sync += acc_sh[0].eq(cur.accumulate)
        m.d.sync += [acc_sh[k].eq(acc_sh[k - 1]) for k in range(1, L)]

        # ---- read-modify-write -----------------------------------------------
        # Both read ports are asynchronous ports followed by a register, which
        # Yosys folds into a synchronous block-RAM port.  With `no_rw_check`
        # (no read needs a defined value when it meets a write to its row in
        # the same cycle: the hazard stall and acc_write's ready keep them
        # apart for every row that uses its read, and readout waits for
        # `idle`) it then adds no read-first emulation around a block RAM that
        # does not guarantee it (iCE40: a delayed write port, a bypass mux and
        # ~2 flip-flops per bit per port).
        m.submodules.acc = acc = memory.Memory(shape=acc_row_layout(cfg), depth=cfg.acc_depth,
                                               init=[], attrs={"no_rw_check": 1})
        wp = acc.write_port()
        # Spread so that no path has more than one of {block RAM read, add}
        # (see docs/matmul.md):
        #   R0  row two cycles before `results` (array.ahead): read its row
        #   R1  RAM data registered, or 0 for an overwriting row
        #   S0  row on `results`: added, registered
        #   S1  written
        # Nothing is forwarded: the hazard stall above and acc_write's ready
        # keep every write a row must see ahead of its R0.
        # R0: the read port's register (merged into the block RAM)
        rmw_rp = RegisteredReadPort(m, acc, "rd_r")
        rd_r = rmw_rp.data
        # Readout is only used once the rows it reads have landed (`idle`), so
        # it needs no transparency logic either.
        ext_rp = acc.read_port(domain="comb")
        res = array.results
        ahead = array.ahead
        row = acc_row_layout(cfg)
        m.d.comb += [res.ready.eq(1), rmw_rp.addr.eq(ahead.acc_addr)]

        # R1
        r1_valid = Signal()
        m.d.sync += r1_valid.eq(ahead.valid)
        # (not reset_less: with a reset, Icarus evaluates the Verilog mux
        # feeding it at the reset edge rather than only when acc_sh changes)
        old = Signal(row)
        with m.If(acc_sh[L - 1]):
            m.d.sync += old.eq(rd_r)
        with m.Else():
            m.d.sync += old.eq(0)

        # S0
        s1_valid = Signal()
        s1_addr = Signal(range(cfg.acc_depth), reset_less=True)
        s1_data = Signal(row, reset_less=True)
        for j in range(cfg.cols):
            # Truncation to acc_bits is the documented wrap; unreachable for K <= max_k.
            m.d.sync += s1_data[j].eq(old[j] + res.payload.data[j])
        m.d.sync += [s1_valid.eq(res.valid), s1_addr.eq(res.payload.acc_addr)]

        # S1
        m.d.comb += self.acc_write.ready.eq(~(ahead.valid | r1_valid | res.valid | s1_valid))
        with m.If(s1_valid):
            m.d.comb += [wp.en.eq(1), wp.addr.eq(s1_addr), wp.data.eq(s1_data)]
        with m.Elif(self.acc_write.valid & self.acc_write.ready):
            m.d.comb += [wp.en.eq(1), wp.addr.eq(self.acc_write.payload.addr),
                         wp.data.eq(self.acc_write.payload.data)]

        # Readout: a one-deep pipeline that holds its data under back-pressure
        # (a RegisteredReadPort written out: its register shares the stage's
        # enable with `valid`).
        rd_q = Signal(row, reset_less=True)
        m.d.comb += [
            self.rd_addr.ready.eq(~self.rd_data.valid | self.rd_data.ready),
            ext_rp.addr.eq(self.rd_addr.payload),
            self.rd_data.payload.eq(rd_q),
        ]
        with m.If(self.rd_addr.ready):
            m.d.sync += [self.rd_data.valid.eq(self.rd_addr.valid), rd_q.eq(ext_rp.data)]

        # idle is a flip-flop: ~sk_valid & array.idle & ~s1_valid one cycle
        # ahead.  The array always advances (results.ready = 1), so after
        # this edge the skid and the array are empty and no sum waits exactly
        # when no row is offered or waiting now (nothing enters the array or
        # the skid) and the array is empty now (its last row, if any, is the
        # one S1 takes).
        idle = Signal(init=1)
        m.d.sync += idle.eq(~cur_valid & array.idle)
        m.d.comb += [
            self.idle.eq(idle),
            self.active.eq(accept),
        ]
        return m

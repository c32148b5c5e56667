"""Weight-stationary systolic int8 matrix-multiply array.

Built from one :class:`hetaccel.spec.AcceleratorConfig`:

:class:`SystolicArray`
    ``rows x cols`` processing elements.  PE ``(i, j)`` holds weight
    ``W[k0+R-1-i, n0+j]`` of the current tile (``R = rows``); element
    ``R-1-i`` of activation row ``A[m, k0:k0+rows]`` enters PE row ``i``
    through one input register and skewed (delayed ``max(0, i-1)`` more
    cycles) and moves right along it, partial
    sums move down the columns, and the column sums leave deskewed as one
    result row ``A[m, k-slice] . W_tile`` (``cols`` values of ``acc_bits``).
    Every PE holds two weight registers (banks): a weight tile loads into the
    idle bank while the other bank computes, through one shift chain per
    column and bank (a weight row enters PE row 0 and pushes the bank's rows
    down, hence the reversed row order), so every connection of the array is
    between neighbours or from a registered, per-row control.  The bank a PE
    multiplies with travels with the activation wavefront, so the first row of
    the next tile follows the last row of the current one on the very next
    cycle: consecutive tiles stream with no pipeline drain.  Each PE registers
    its product (built as ``config.mac_mapping`` / ``lut_multipliers`` say, see
    :mod:`hetaccel.rtl.multiplier`) and adds it to the partial sum from above
    one cycle later, so no path holds more than a multiplier or an adder.
:class:`~hetaccel.rtl.engine.MatmulEngine` (in :mod:`hetaccel.rtl.engine`)
    wraps the array with the accumulator memory its result rows are written into
    or added to.

Flow control: the whole array advances on one enable, ``en = ~out_valid |
results.ready``.  When the consumer holds ``results.ready`` low with a result
waiting, every pipeline register holds, ``acts.ready`` drops and nothing is lost
or duplicated.  Empty slots (cycles without an activation) travel as bubbles
with a cleared valid bit.  Loading weights never depends on ``en``: a bank is
overwritten only once no activation that still has to multiply with it is in
the array (``busy``), and only after the last activation row of its tile was
accepted.

Timing (cycles counted from the transfer, all ports at full rate): an activation
row accepted in cycle ``c`` leaves on ``results`` in cycle ``c + rows + cols + 1``;
the engine writes it into the accumulator memory in cycle ``c + rows + cols + 2``.
``latency`` is :func:`hetaccel.spec.timing.array_latency` (one definition).
See docs/matmul.md and :func:`hetaccel.spec.timing.tile_cycles`.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import AcceleratorConfig, timing
from .contract import check_depth
from .multiplier import (LUT_PE_SPLIT, lut_levels, lut_product, mult18x18d, pe_mapping,
                         sb_mac16_dual)

__all__ = ["SystolicArray", "weight_layout", "act_layout",
           "result_layout", "acc_row_layout", "acc_write_layout"]


def _check_config(config, who: str) -> AcceleratorConfig:
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"{who}: config must be a hetaccel.spec.AcceleratorConfig, "
                        f"not {type(config).__name__} ({config!r})")
    return config


def weight_layout(config: AcceleratorConfig) -> data.ArrayLayout:
    """Payload of one ``weights`` transfer: one weight-tile row, ``cols`` operands."""
    return data.ArrayLayout(signed(config.operand_bits), config.cols)


def act_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of one ``acts`` transfer: one activation row plus its control."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(config.operand_bits), config.rows),
        "last": 1,
        "accumulate": 1,
        "acc_addr": range(config.acc_depth),
    })


def acc_row_layout(config: AcceleratorConfig) -> data.ArrayLayout:
    """One accumulator row: ``cols`` signed ``acc_bits`` values."""
    return data.ArrayLayout(signed(config.acc_bits), config.cols)


def result_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of one ``results`` transfer of :class:`SystolicArray`."""
    return data.StructLayout({
        "data": acc_row_layout(config),
        "last": 1,
        "accumulate": 1,
        "acc_addr": range(config.acc_depth),
    })


def acc_write_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of :class:`MatmulEngine`'s ``acc_write`` port."""
    return data.StructLayout({"addr": range(config.acc_depth), "data": acc_row_layout(config)})


def _sum_bits(config: AcceleratorConfig, terms: int) -> int:
    # A partial sum of `terms` products never needs more than this; past
    # acc_bits it is kept modulo 2**acc_bits, which is exact whenever the final
    # sum fits (guaranteed by the config for K <= max_k).
    need = 2 * config.operand_bits + max(0, (terms - 1).bit_length())
    return min(config.acc_bits, need)


def _fabric_pe(m, en, a, w_next, p, name):
    # Weight register in the fabric beside the product register; the product
    # is a `$mul` (a DSP without internal registers, or LUTs where there is
    # none).
    wreg = Signal(signed(len(a)), name=f"w_{name}")
    with m.If(en):
        m.d.sync += [wreg.eq(w_next), p.eq(a * wreg)]


def _lut_pe(m, en, a_next, w_next, p, name):
    # The product over both of the PE's register stages: the edge that loads
    # a generic PE's weight register (and the activation chain register it
    # multiplies with) instead registers the partial products and the first
    # LUT_PE_SPLIT adder levels, built from what those two registers would
    # load; the rest of the tree feeds the product register.  Same latency,
    # about half the tree per cycle.  The stage registers hold under `en` like
    # every pipeline register, so a stalled product cycle keeps its operands.
    cut = []

    def stage(v):
        r = Signal(v.shape(), name=f"lp_{name}_{len(cut)}")
        cut.append(r)
        with m.If(en):
            m.d.sync += r.eq(v)
        return r

    # Narrow operands have fewer levels; the cut stays inside the tree.
    split = min(LUT_PE_SPLIT, lut_levels(len(w_next)) - 1)
    product = lut_product(a_next, w_next, stage=stage, split=split)
    with m.If(en):
        m.d.sync += p.eq(product)


def _sb_mac16_pair(m, en, lo, hi, cols, skew, chain, act_next, weight_next, prod):
    # ice40_dual: PE pairs (row-major) share one SB_MAC16 whose B input
    # register holds the two weights and whose 8x8 product registers are the
    # two product registers (CE = en for all).  A pair ending its row takes
    # its activations one register early into the A register (A_REG is all or
    # nothing): the row's last activation register then feeds nothing and is
    # not built.
    (i, j), (hi_i, hi_j) = lo, hi
    a_reg = hi_i == i and hi_j == cols - 1
    a_lo, a_hi = ((act_next(i, j), act_next(hi_i, hi_j)) if a_reg else
                  (chain[i][skew[i] + j], chain[hi_i][skew[hi_i] + hi_j]))
    sb_mac16_dual(m, en, a_lo, weight_next(i, j), a_hi, weight_next(hi_i, hi_j),
                  prod[i][j], prod[hi_i][hi_j], name=f"mac_r{i}_c{j}",
                  b_reg=True, a_reg=a_reg)


class SystolicArray(wiring.Component):
    """Weight-stationary ``rows x cols`` int systolic array, double-buffered weights.

    Parameters
    ----------
    config : AcceleratorConfig
        ``rows``, ``cols``, ``operand_bits``, ``acc_bits`` and ``acc_depth``
        (the width of the ``acc_addr`` field) are used.

    Attributes
    ----------
    weights : In(stream.Signature(weight_layout(config)))
        One row of a weight tile per transfer; ``rows`` transfers form one tile,
        transfer ``i`` being ``W[k0+i, n0:n0+cols]`` (zero-padded).  Tiles are
        used in the order loaded.  Ready while a weight bank is free, i.e. up to
        one tile ahead of the tile computing.
    acts : In(stream.Signature(act_layout(config)))
        One activation row ``A[m, k0:k0+rows]`` (zero-padded) per transfer.
        ``last`` marks the final row multiplied with the current weight tile;
        the next row uses the next tile.  ``accumulate`` and ``acc_addr`` ride
        along unchanged to ``results``.  Not ready until the tile's weights are
        completely loaded, nor while ``results`` is back-pressured.
    results : Out(stream.Signature(result_layout(config)))
        One result row per activation row, in order: ``data[j] =
        sum_i A[m, k0+i] * W[k0+i, n0+j]`` as signed ``acc_bits``.
    idle : Out(1)
        No activation row is inside the array (all results have left).
    ahead : Out(StructLayout({"valid": 1, "acc_addr": range(acc_depth)}))
        The row that will be on ``results`` two enabled cycles from now (its
        ``valid`` and ``acc_addr``), so a consumer that never back-pressures
        can start reading the accumulator row early.
    """

    def __init__(self, config: AcceleratorConfig):
        self._config = _check_config(config, "SystolicArray")
        super().__init__({
            "weights": In(stream.Signature(weight_layout(config))),
            "acts": In(stream.Signature(act_layout(config))),
            "results": Out(stream.Signature(result_layout(config))),
            "idle": Out(1),
            "ahead": Out(data.StructLayout({"valid": 1, "acc_addr": range(config.acc_depth)})),
        })

    @property
    def config(self) -> AcceleratorConfig:
        return self._config

    def elaborate(self, platform):
        cfg = self._config
        R, C, ob = cfg.rows, cfg.cols, cfg.operand_bits
        L = timing.array_latency(cfg)
        m = Module()

        # ---- weight banks and their loader ---------------------------------
        # Each bank of a column is a shift chain down the PE rows: an accepted
        # weight row enters row 0 and pushes every row of that bank one row
        # down, so transfer t of a tile ends in PE row R-1-t and every weight
        # register is loaded from its neighbour above (no broadcast, no row
        # decode).  The activation index is reversed to match (element k
        # enters PE row R-1-k); the column sums are the same.
        w = [[[Signal(signed(ob), name=f"w{b}_r{i}_c{j}") for b in range(2)]
              for j in range(C)] for i in range(R)]
        filled = [Signal(name=f"filled{b}") for b in range(2)]
        busy = [Signal(name=f"busy{b}") for b in range(2)]
        wr_bank = Signal()
        wr_row = Signal(range(R))
        rd_bank = Signal()

        meta_layout = data.StructLayout({
            "valid": 1, "bank": 1, "last": 1, "accumulate": 1,
            "acc_addr": range(cfg.acc_depth)})
        # meta[k] describes the row accepted k+1 enabled cycles ago; meta[L]
        # is the row on `results`.
        meta = [Signal(meta_layout, name=f"meta{k}") for k in range(L + 1)]

        en = Signal()
        m.d.comb += en.eq(~meta[L].valid | self.results.ready)

        for b in range(2):
            # Stages 0..L-1 still have multiplications ahead of them; the row in
            # meta[L] is done with the weights.
            m.d.comb += busy[b].eq(Cat(*[meta[k].valid & (meta[k].bank == b)
                                         for k in range(L)]).any())

        # weights.ready is a flip-flop holding what ~filled & ~busy of the
        # write bank will be (computed from the next-state values, below), so
        # the feeder's logic starts at a register instead of at the bank
        # bookkeeping (on the iCEBreaker that chain, array -> command
        # processor -> array, was the device's critical path).
        w_ready = Signal(init=1, name="w_ready")
        m.d.comb += self.weights.ready.eq(w_ready)
        w_accept = self.weights.valid & self.weights.ready

        # rd_filled is filled[rd_bank], kept as a flip-flop of its own (next
        # state below), so an accept is one LUT from registers and the bank
        # flags' enables two more (with the select through rd_bank, the accept
        # -> filled-flag enable chain was the iCEBreaker's critical path)
        rd_filled = Signal(name="rd_filled")
        a_ready = en & rd_filled
        m.d.comb += self.acts.ready.eq(a_ready)
        a_accept = self.acts.valid & self.acts.ready

        # The shift happens one cycle after the transfer, from registers: the
        # accepted row (w_in) and a per-row, per-bank shift enable, so neither
        # the feeder's valid nor its payload fans out over the array.  The
        # bank-safety argument is unchanged: a row is accepted only into a bank
        # that is neither filled nor busy, and an activation accepted in the
        # cycle of its tile's final shift reads the bank only from the next
        # cycle on (every PE's weight register loads one edge after the
        # acceptance at the earliest, behind the rows' input registers).
        #
        # Row i only has to shift from the tile's transfer i on (what it holds
        # before is overwritten anyway), so its enable also checks wr_row >= i.
        # That makes the R copies different functions: Yosys merges identical
        # flip-flops (a keep attribute does not stop it), and one merged copy
        # would fan out to every row again.
        w_in = [Signal(signed(ob), name=f"w_in_c{j}") for j in range(C)]
        shift = [[Signal(name=f"wshift{b}_r{i}") for i in range(R)] for b in range(2)]
        m.d.sync += [w_in[j].eq(self.weights.payload[j]) for j in range(C)]
        for b in range(2):
            m.d.sync += [shift[b][i].eq(w_accept & (wr_bank == b) & (wr_row >= i))
                         for i in range(R)]
        for i in range(R):
            for j in range(C):
                for b in range(2):
                    with m.If(shift[b][i]):
                        m.d.sync += w[i][j][b].eq(w_in[j] if i == 0 else w[i - 1][j][b])
        with m.If(w_accept):
            with m.If(wr_row == R - 1):
                m.d.sync += [wr_row.eq(0), wr_bank.eq(~wr_bank)]
            with m.Else():
                m.d.sync += wr_row.eq(wr_row + 1)
        fill = [w_accept & (wr_bank == b) & (wr_row == R - 1) for b in range(2)]
        a_done = a_accept & self.acts.payload.last      # the read bank's tile ends
        for b in range(2):
            with m.If(fill[b]):
                m.d.sync += filled[b].eq(1)
            with m.If(a_done & (rd_bank == b)):
                m.d.sync += filled[b].eq(0)
        with m.If(a_done):
            m.d.sync += rd_bank.eq(~rd_bank)
        # filled[rd_bank] after this edge: the other bank's flag (never
        # cleared now) when the read bank ends its tile, else this one's
        # (cleared only by that end)
        m.d.sync += rd_filled.eq(Mux(a_done,
                                     Mux(rd_bank, filled[0] | fill[0], filled[1] | fill[1]),
                                     rd_filled | Mux(rd_bank, fill[1], fill[0])))
        # Next-state values of the write bank and of its busy flag (meta
        # shifts under en: stage 0 takes this cycle's accept).  The current
        # filled flags serve as next ones: a flag set now belongs to the bank
        # the write bank leaves, and a flag cleared now belongs to a bank an
        # accept just made busy.
        wr_bank_nx = wr_bank ^ (w_accept & (wr_row == R - 1))
        free_nx = []
        for b in range(2):
            older = [meta[k].valid & (meta[k].bank == b) for k in range(L - 1)]
            shifted = (a_accept & (rd_bank == b)) | (Cat(*older).any() if older else 0)
            free_nx.append(~filled[b] & ~Mux(en, shifted, busy[b]))
        m.d.sync += w_ready.eq(Mux(wr_bank_nx, free_nx[1], free_nx[0]))

        # ---- the array --------------------------------------------------------
        # Every PE registers its product and adds it to the partial sum from
        # above one cycle later.  Row 0 passes its product register straight
        # down (no add), so rows 0 and 1 enter with the same skew: row i is
        # delayed max(0, i-1) cycles and the product stage costs no latency.
        # On top of that every row starts with one plain fabric register
        # (chain[i][0]), so no PE operand register (a DSP's A/B input register
        # may sit far from the feeder) loads from `acts.payload`, which comes
        # from the engine's skid mux and, behind it, a block RAM's unregistered
        # read port: that was the ECP5 device's critical path (BRAM clock-to-out
        # + 2 LUTs + the route to a MULT18X18D).  It costs one cycle of latency
        # and rows * operand_bits flip-flops.
        # chain[i][skew[i] + j] feeds PE (i, j); the bank bit travels beside it.
        skew = [max(0, i - 1) + 1 for i in range(R)]
        chain = [[Signal(signed(ob), name=f"a_r{i}_{e}") for e in range(skew[i] + C)]
                 for i in range(R)]
        cbank = [[Signal(name=f"ab_r{i}_{e}") for e in range(skew[i] + C)] for i in range(R)]
        prod = [[Signal(signed(2 * ob), name=f"m_r{i}_c{j}") for j in range(C)] for i in range(R)]
        psum = [[prod[0][j] if i == 0 else
                 Signal(signed(_sum_bits(cfg, i + 1)), name=f"p_r{i}_c{j}") for j in range(C)]
                for i in range(R)]
        # Column j finishes cols-1-j cycles before the last column: delay it
        # (at the column sum's width; sign-extended to acc_bits on the way out).
        deskew = [[Signal(psum[R - 1][j].shape(), name=f"d_c{j}_{e}") for e in range(C - 1 - j)]
                  for j in range(C)]
        # Registers from an accepted row to its result (the last PE's input
        # chain, its product register, its partial-sum register) must be the
        # latency the cycle model uses.
        built = skew[R - 1] + C + 1 + (1 if R > 1 else 0) - 1
        check_depth("SystolicArray", built, L, "hetaccel.spec.timing.array_latency(config)")

        with m.If(en):
            m.d.sync += meta[0].valid.eq(a_accept)
            m.d.sync += [
                meta[0].bank.eq(rd_bank),
                meta[0].last.eq(self.acts.payload.last),
                meta[0].accumulate.eq(self.acts.payload.accumulate),
                meta[0].acc_addr.eq(self.acts.payload.acc_addr),
            ]
            m.d.sync += [meta[k].eq(meta[k - 1]) for k in range(1, L + 1)]
            for i in range(R):
                # A bubble's bank bit is a don't-care: taking a bit of this
                # row's own (ignored) data then keeps Yosys from merging the R
                # identical bank-bit chains into one that spans every row.  The
                # bit is the row's input register's current one, not the
                # payload's: the payload comes from the engine's skid mux
                # behind a block RAM read port, and BRAM -> skid mux -> this
                # mux was the ECP5 engine's critical path (8x8, 9.1 ns).
                m.d.sync += [chain[i][0].eq(self.acts.payload.data[R - 1 - i]),
                             cbank[i][0].eq(Mux(a_accept, rd_bank, chain[i][0][0]))]
                for e in range(1, skew[i] + C):
                    m.d.sync += [chain[i][e].eq(chain[i][e - 1]), cbank[i][e].eq(cbank[i][e - 1])]
                if i > 0:
                    m.d.sync += [psum[i][j].eq(psum[i - 1][j] + prod[i][j]) for j in range(C)]
            for j in range(C):
                for e, reg in enumerate(deskew[j]):
                    m.d.sync += reg.eq(psum[R - 1][j] if e == 0 else deskew[j][e - 1])

        # ---- the PEs' products --------------------------------------------------
        # A PE's product register loads at the edge ending its product cycle,
        # the cycle its activation sits in chain[i][e].  Both operands are
        # registered one edge earlier (under en, like everything in the
        # pipeline), in the fabric or in a DSP's input registers (a LUT PE
        # registers its first partial sums instead); what those registers
        # load from is the same for every kind of PE:
        # (skew[i] >= 1: no PE sits at chain position 0, whose register loads
        # from `acts` at the acceptance edge.)
        def act_next(i, j):
            # What chain[i][e] loads: the multiplier's activation, one edge early.
            return chain[i][skew[i] + j - 1]

        def weight_next(i, j):
            # The weight of the product cycle, one edge early: the bank bit is
            # still in chain position e-1.  That edge is at least one after the
            # acceptance, so it is after the bank's final shift.
            return Mux(cbank[i][skew[i] + j - 1], w[i][j][1], w[i][j][0])

        kinds = pe_mapping(cfg)
        flat = [(i, j) for i in range(R) for j in range(C)]
        for idx, (i, j) in enumerate(flat):
            kind, a_now, name = kinds[i][j], chain[i][skew[i] + j], f"r{i}_c{j}"
            if kind == "generic":
                _fabric_pe(m, en, a_now, weight_next(i, j), prod[i][j], name)
            elif kind == "lut":
                # Like the DSP PEs, from what the operand registers load.
                _lut_pe(m, en, act_next(i, j), weight_next(i, j), prod[i][j], name)
            elif kind == "mult18":
                # MULT18X18D: input registers A, B and the output register P
                # are the PE's activation, weight and product registers, so
                # the routes into and out of the DSP are in different cycles.
                mult18x18d(m, en, act_next(i, j), weight_next(i, j), prod[i][j],
                           name=f"mult_{name}", a_reg=True, b_reg=True, p_reg=True)
            elif kind == "dsp_lo":
                _sb_mac16_pair(m, en, (i, j), flat[idx + 1], C, skew, chain,
                               act_next, weight_next, prod)
            else:   # built with its dsp_lo partner
                assert kind == "dsp_hi", f"PE {(i, j)}: unknown kind {kind!r}"

        for j in range(C):
            out = deskew[j][-1] if deskew[j] else psum[R - 1][j]
            m.d.comb += self.results.payload.data[j].eq(out)
        m.d.comb += [
            self.results.valid.eq(meta[L].valid),
            self.results.payload.last.eq(meta[L].last),
            self.results.payload.accumulate.eq(meta[L].accumulate),
            self.results.payload.acc_addr.eq(meta[L].acc_addr),
            self.idle.eq(~Cat(*[mk.valid for mk in meta]).any()),
        ]
        # The row two enabled cycles before `results` (the engine reads its
        # accumulator row that early); L = rows + cols >= 2, so it is a
        # registered stage, never the row being accepted.
        m.d.comb += [
            self.ahead.valid.eq(meta[L - 2].valid),
            self.ahead.acc_addr.eq(meta[L - 2].acc_addr),
        ]
        return m

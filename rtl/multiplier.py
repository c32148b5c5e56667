"""The processing elements' multipliers, one per ``AcceleratorConfig.mac_mapping``.

Every PE of :class:`hetaccel.rtl.systolic.SystolicArray` registers its product
``a * w`` (the product register is the PE's pipeline stage) and adds it to the
partial sum from above one cycle later.  How the product is built is chosen by
the config, so the RTL, the fit checks of the board flow and the docs all read
one field:

``mac_mapping = "generic"``
    ``a * w`` in Amaranth; Yosys infers a hard multiplier (ECP5 MULT18X18D,
    iCE40 SB_MAC16 with ``-dsp``: one per product) or LUTs where there is none.
``mac_mapping = "ice40_dual"``
    Two PEs share one iCE40 ``SB_MAC16`` in its dual signed 8x8 mode
    (``MODE_8x8``, ``A_SIGNED``, ``B_SIGNED``): operands of the first PE of the
    pair on ``A[7:0]``/``B[7:0]``, product on ``O[15:0]``; the second PE's on
    ``A[15:8]``/``B[15:8]`` and ``O[31:16]``.  The DSP's own 8x8 product
    registers (``TOP/BOT_8x8_MULT_REG``, selected by ``TOP/BOTOUTPUT_SELECT =
    2``) are the PEs' product registers, so the pipeline stage costs no logic.
``mac_mapping = "ecp5_mult18"``
    Each PE instantiates one ECP5 ``MULT18X18D`` (:func:`mult18x18d`, operands
    sign-extended to 18 bits): its input registers ``A`` / ``B``
    (``REG_INPUTA/B_CLK = "CLK0"``) hold the PE's activation and weight, its
    output register (``REG_OUTPUT_CLK = "CLK0"``) is the product register, all
    with ``CE0`` = the array's enable.  The fabric only feeds the DSP from
    registers and takes its product from a register, so the long routes to
    and from the DSP column are in different cycles (an inferred
    ``MULT18X18D`` has no registers: a fabric register -> DSP -> fabric
    register path pays both).  Simulated with :func:`mult18x18d_model`.
``lut_multipliers = N``
    The last ``N`` PEs (row-major order) build their product from LUTs: an
    explicit shift-and-add of partial products (:func:`lut_product`), which
    Yosys does not map to a DSP, so an array can have more MACs than the device
    has hard multipliers.  Like a DSP PE's input registers, the LUT PE's
    first register stage loads from the activation chain position before it
    and the bank-selected weight; it holds the partial products summed over
    the first :data:`LUT_PE_SPLIT` adder levels, and the rest of the tree
    feeds the product register, so each cycle holds about half the tree.

:class:`LutMultiplier` wraps :func:`lut_product` (whole, or cut where a LUT PE
registers it) as a tiny component for the exhaustive test.
:func:`sb_mac16_model` extracts Yosys's simulation model of ``SB_MAC16``
(``share/ice40/cells_sim.v`` of the installed YoWASP Yosys) for
cocotb runs of an ``ice40_dual`` array; :func:`simulation_models` lists the
Verilog models any config's array needs.
"""

from __future__ import annotations

from pathlib import Path

from amaranth import Cat, ClockSignal, Const, Instance, Module, Mux, Signal, signed
from amaranth.hdl import Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MAC_MAPPINGS", "LUT_PE_SPLIT", "lut_levels", "lut_product", "LutMultiplier",
           "pe_mapping", "sb_mac16_dual", "sb_mac16_model", "hard_multipliers", "mult18x18d",
           "mult18x18d_model", "simulation_models"]

from ..spec import MAC_MAPPINGS  # noqa: F401  (re-exported: the values the spec accepts)
from .ecp5_dsp import mult18x18d, mult18x18d_model
from .ice40_cells import ice40_cell_model


#: Adder levels of :func:`lut_product` that a LUT PE computes in its operand
#: cycle (with the partial products, from the operands its registers would
#: load) before registering the partial sums; the rest of the tree is in the
#: product cycle.  See docs/matmul.md for the ECP5 figures behind the choice.
LUT_PE_SPLIT = 1


def lut_levels(bits: int) -> int:
    """Adder levels of :func:`lut_product`'s tree for a ``bits``-wide ``b``
    (at least 1, so a 1-bit operand still has a level to cut before)."""
    return max(1, (bits - 1).bit_length())


def lut_product(a: Value, b: Value, *, stage=None, split: int = 1) -> Value:
    """Signed ``a * b`` as a balanced adder tree of partial products.

    ``b``'s bit ``k`` selects ``a << k``; the sign bit's term is subtracted
    (two's complement weight ``-2**(n-1)``).  There is no ``$mul`` cell for a
    DSP mapper to find, only AND-like selects and adders.  The result is
    ``signed(len(a) + len(b))``, exact for every operand pair.

    Parameters
    ----------
    a, b : Value
        The operands (``a`` is taken as signed, ``b``'s top bit as its sign).
    stage : callable, optional
        Called once for every partial sum left after ``split`` adder levels,
        ``stage(value)``; the tree continues from what it returns.  A PE
        passes a function that registers ``value`` (a ``Signal`` of
        ``value.shape()`` loaded under the array's enable), so the partial
        products and the first ``split`` levels are one pipeline stage and
        the rest of the tree the next; :class:`LutMultiplier` passes a plain
        intermediate signal so the exhaustive test checks the same cut.  The
        stored partial sums are kept unshifted (their weight ``2**k`` is
        applied after the cut), so the registers hold no constant zeros.
    split : int
        Adder levels before the cut, ``0 <= split < ceil(log2(len(b)))``
        (0 registers the partial products themselves).  Ignored without
        ``stage``.
    """
    a = a.as_signed()
    n = len(b)
    width = len(a) + n
    levels = lut_levels(n)
    if stage is not None and not (isinstance(split, int) and 0 <= split < levels):
        raise ValueError(f"split must be an integer in [0, {levels - 1}] for a {n}-bit "
                         f"operand, got {split!r}")
    # (value, k, neg): the term is (-1 if neg else 1) * value * 2**k.  Terms
    # sum unshifted and carry their weight, so a pair adds at the lower weight
    # with only the higher term shifted by the difference; the sign bit's term
    # is subtracted where it meets its partner rather than negated on its own
    # (a negation widens it by a bit, which a stage register would store).
    # It is the last term, so it is always the second of a pair.  Shifts are
    # `shift_left` (exact width; `<<` by an int widens by 2**bits(k) - 1).
    terms = [(Mux(b[k], a, 0).as_signed(), k, k == n - 1) for k in range(n)]
    level = 0
    while True:
        if stage is not None and level == split:
            terms = [(stage(v), k, neg) for v, k, neg in terms]
        if len(terms) == 1:
            break
        nxt = []
        for i in range(0, len(terms) - 1, 2):
            (v0, k0, neg0), (v1, k1, neg1) = terms[i], terms[i + 1]
            assert not neg0
            v1 = v1.shift_left(k1 - k0)
            nxt.append((v0 - v1 if neg1 else v0 + v1, k0, False))
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
        level += 1
    v, k, neg = terms[0]
    v = (-v if neg else v).shift_left(k)
    # Truncation is exact: the true product fits signed(width).
    return v[:width].as_signed() if len(v) > width else v


class LutMultiplier(wiring.Component):
    """Combinational ``p = a * b`` from :func:`lut_product` (for tests).

    Parameters
    ----------
    bits : int
        Width of the signed operands, 2..16.
    split : int or None
        With an integer, the partial sums after ``split`` adder levels pass
        through intermediate signals of their own shapes, the cut a LUT PE
        registers (:func:`lut_product`'s ``stage``), so the exhaustive test
        also checks that nothing is lost at the cut.

    Attributes
    ----------
    a, b : In(signed(bits))
    p : Out(signed(2 * bits))
    cut : list of Signal
        The intermediate signals (empty without ``split``), after elaboration.
    """

    def __new__(cls, bits: int = 8, split: int | None = None):
        # Checked before the object exists: a refused unit would otherwise be
        # reported as an elaboratable created but never used.
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f"bits must be an integer in [2, 16], got {bits!r}")
        levels = lut_levels(bits)
        if split is not None and (isinstance(split, bool) or not isinstance(split, int)
                                  or not 0 <= split < levels):
            raise ValueError(f"split must be None or an integer in [0, {levels - 1}] for "
                             f"bits={bits}, got {split!r}")
        return super().__new__(cls, src_loc_at=1)   # unused: reported at the caller's line

    def __init__(self, bits: int = 8, split: int | None = None):
        self.bits = bits
        self.split = split
        self.cut = []
        super().__init__({"a": In(signed(bits)), "b": In(signed(bits)), "p": Out(signed(2 * bits))})

    def elaborate(self, platform):
        m = Module()
        self.cut = []

        def cut(v):
            s = Signal(v.shape(), name=f"cut{len(self.cut)}")
            self.cut.append(s)
            m.d.comb += s.eq(v)
            return s

        m.d.comb += self.p.eq(lut_product(self.a, self.b,
                                          stage=None if self.split is None else cut,
                                          split=self.split or 0))
        return m


def pe_mapping(config) -> list[list[str]]:
    """``kind[i][j]`` of PE ``(i, j)``: ``"generic"``, ``"lut"``, ``"mult18"`` (one
    instantiated ECP5 ``MULT18X18D``) or ``"dsp_lo"`` / ``"dsp_hi"`` (the two
    halves of one ``SB_MAC16``, hi = the PE after lo in row-major order)."""
    R, C = config.rows, config.cols
    n_hard = R * C - config.lut_multipliers
    kinds = []
    for idx in range(R * C):
        if idx >= n_hard:
            kinds.append("lut")
        elif config.mac_mapping == "ice40_dual":
            kinds.append("dsp_lo" if idx % 2 == 0 else "dsp_hi")
        elif config.mac_mapping == "ecp5_mult18":
            kinds.append("mult18")
        else:
            kinds.append("generic")
    return [kinds[i * C:(i + 1) * C] for i in range(R)]


def hard_multipliers(config) -> int:
    """Hard multiplier blocks the array needs: one per generic product (what
    Yosys infers on ECP5 and on iCE40 with ``-dsp``), one ``MULT18X18D`` per
    PE with ``ecp5_mult18`` (instantiated, so also with ``synth_ecp5
    -nodsp``), one ``SB_MAC16`` per PE pair with ``ice40_dual``; LUT PEs need
    none."""
    n_hard = config.macs - config.lut_multipliers
    return n_hard // 2 if config.mac_mapping == "ice40_dual" else n_hard


def sb_mac16_dual(m: Module, en: Value, a_lo: Value, b_lo: Value, a_hi: Value, b_hi: Value,
                  p_lo: Signal, p_hi: Signal, name: str, b_reg: bool = False,
                  a_reg: bool = False) -> None:
    """One ``SB_MAC16`` as two registered signed 8x8 multipliers.

    ``p_lo`` / ``p_hi`` (``signed(16)``) take ``a_lo*b_lo`` / ``a_hi*b_hi`` at
    every clock edge with ``en`` high (the DSP's ``CE``), like an Amaranth
    ``m.d.sync`` register under ``en``; they are not reset (products of empty
    slots are discarded by the array anyway).

    With ``b_reg`` the DSP's ``B`` input register (``B_REG``, same ``CE``) is
    used: the products are then of ``a`` and of the ``b`` of the previous
    enabled edge, so a caller's own ``b`` register under ``en`` moves into the
    DSP and costs no fabric flip-flops.  ``a_reg`` does the same for ``A``.
    """
    o = Signal(32, name=f"{name}_o")
    m.submodules[name] = Instance(
        "SB_MAC16",
        p_NEG_TRIGGER=Const(0, 1),
        p_C_REG=Const(0, 1), p_A_REG=Const(int(a_reg), 1), p_B_REG=Const(int(b_reg), 1),
        p_D_REG=Const(0, 1),
        p_TOP_8x8_MULT_REG=Const(1, 1), p_BOT_8x8_MULT_REG=Const(1, 1),
        p_PIPELINE_16x16_MULT_REG1=Const(0, 1), p_PIPELINE_16x16_MULT_REG2=Const(0, 1),
        p_TOPOUTPUT_SELECT=Const(2, 2), p_TOPADDSUB_LOWERINPUT=Const(0, 2),
        p_TOPADDSUB_UPPERINPUT=Const(0, 1), p_TOPADDSUB_CARRYSELECT=Const(0, 2),
        p_BOTOUTPUT_SELECT=Const(2, 2), p_BOTADDSUB_LOWERINPUT=Const(0, 2),
        p_BOTADDSUB_UPPERINPUT=Const(0, 1), p_BOTADDSUB_CARRYSELECT=Const(0, 2),
        p_MODE_8x8=Const(1, 1), p_A_SIGNED=Const(1, 1), p_B_SIGNED=Const(1, 1),
        i_CLK=ClockSignal(), i_CE=en,
        i_A=_pair(a_lo, a_hi), i_B=_pair(b_lo, b_hi), i_C=Const(0, 16), i_D=Const(0, 16),
        i_AHOLD=0, i_BHOLD=0, i_CHOLD=0, i_DHOLD=0,
        i_IRSTTOP=0, i_IRSTBOT=0, i_ORSTTOP=0, i_ORSTBOT=0,
        i_OLOADTOP=0, i_OLOADBOT=0, i_ADDSUBTOP=0, i_ADDSUBBOT=0,
        i_OHOLDTOP=0, i_OHOLDBOT=0, i_CI=0, i_ACCUMCI=0, i_SIGNEXTIN=0,
        o_O=o)
    m.d.comb += [p_lo.eq(o[0:16].as_signed()), p_hi.eq(o[16:32].as_signed())]


def _pair(lo: Value, hi: Value) -> Value:
    # 16-bit DSP input: the lo PE's operand in bits 7..0, the hi PE's in 15..8.
    return Cat(lo.as_unsigned()[:8], hi.as_unsigned()[:8])


def sb_mac16_model(directory: str | Path) -> Path:
    """Write Yosys's ``SB_MAC16`` simulation model to ``directory``; returns the
    file (:func:`hetaccel.rtl.ice40_cells.ice40_cell_model`)."""
    return ice40_cell_model("SB_MAC16", directory)


def simulation_models(config, directory: str | Path) -> tuple[Path, ...]:
    """Verilog models of the vendor cells ``config``'s array instantiates,
    written to ``directory`` (``()`` for generic / LUT arrays): pass them as
    ``run_cocotb(..., extra_sources=...)``."""
    if config.mac_mapping == "ice40_dual" and hard_multipliers(config):
        return (sb_mac16_model(directory),)
    if config.mac_mapping == "ecp5_mult18" and hard_multipliers(config):
        return (mult18x18d_model(directory),)
    return ()

"""The ECP5 ``MULT18X18D`` as a registered multiplier, and its simulation model.

Yosys ships only a black box of ``MULT18X18D`` (``share/lattice/cells_bb_ecp5.v``),
so cocotb runs of an array that instantiates it need a model.  This module is
the one place that knows which subset of the cell is used: :data:`MODELLED`
lists, per parameter, the values :func:`mult18x18d_model` implements, the
instance builder :func:`mult18x18d` refuses anything else, and the model's
Verilog is generated from the same table (a parameter outside it is a
compile-time error in Icarus and Verilator), so the instance and the model
cannot drift apart.

The modelled behaviour, as Lattice's "ECP5 and ECP5-5G sysDSP Usage Guide"
(TN1267) describes the slice's multiplier:

* ``P[35:0] = A[17:0] * B[17:0]``, each operand two's complement when its
  ``SIGNEDA`` / ``SIGNEDB`` input is high (unsigned otherwise);
* ``REG_INPUTA_CLK = "CLK0"`` puts a register on ``A`` (and its sign control)
  clocked by ``CLK0``, loading when ``CE0`` is high and cleared synchronously
  by ``RST0`` (``RESETMODE = "SYNC"``); ``"NONE"`` makes ``A`` combinational.
  Likewise ``REG_INPUTB_*`` for ``B`` and ``REG_OUTPUT_*`` for ``P``;
* the pipeline register between multiplier and output (``REG_PIPELINE_CLK``),
  the ``C`` input register, the shift inputs (``SOURCEA`` / ``SOURCEB`` must be
  0), the cascade outputs (``SRO*``, ``RO*``) and the high-speed clock are not
  modelled (their parameters are pinned to their defaults, outputs tie to 0).

The model is our reading of the documentation, not Lattice's simulation
library: a test against it shows the array uses the cell the way we read the
guide, not that silicon agrees.
"""

from __future__ import annotations

from pathlib import Path

from amaranth import ClockSignal, Instance, Module, Signal, signed
from amaranth.hdl import Value

__all__ = ["MODELLED", "check_params", "mult18x18d", "mult18x18d_model"]

#: Parameter -> values the model implements (first = the cell's default).
MODELLED: dict[str, tuple[str, ...]] = {
    "REG_INPUTA_CLK": ("NONE", "CLK0"), "REG_INPUTA_CE": ("CE0",), "REG_INPUTA_RST": ("RST0",),
    "REG_INPUTB_CLK": ("NONE", "CLK0"), "REG_INPUTB_CE": ("CE0",), "REG_INPUTB_RST": ("RST0",),
    "REG_INPUTC_CLK": ("NONE",), "REG_INPUTC_CE": ("CE0",), "REG_INPUTC_RST": ("RST0",),
    "REG_PIPELINE_CLK": ("NONE",), "REG_PIPELINE_CE": ("CE0",), "REG_PIPELINE_RST": ("RST0",),
    "REG_OUTPUT_CLK": ("NONE", "CLK0"), "REG_OUTPUT_CE": ("CE0",), "REG_OUTPUT_RST": ("RST0",),
    "CLK0_DIV": ("ENABLED",), "CLK1_DIV": ("ENABLED",), "CLK2_DIV": ("ENABLED",),
    "CLK3_DIV": ("ENABLED",), "HIGHSPEED_CLK": ("NONE",), "GSR": ("ENABLED",),
    "CAS_MATCH_REG": ("FALSE",), "SOURCEB_MODE": ("B_SHIFT",), "MULT_BYPASS": ("DISABLED",),
    "RESETMODE": ("SYNC",),
}

_OUTPUTS = (("SROA", 18), ("SROB", 18), ("ROA", 18), ("ROB", 18), ("ROC", 18), ("P", 36))
_INPUTS = (("A", 18), ("B", 18), ("C", 18), ("SRIA", 18), ("SRIB", 18))
_CONTROLS = ("SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB", "CLK0", "CLK1", "CLK2", "CLK3",
             "CE0", "CE1", "CE2", "CE3", "RST0", "RST1", "RST2", "RST3")


def check_params(params: dict[str, str]) -> None:
    """Raise ValueError unless every parameter value is one :data:`MODELLED` lists."""
    for name, value in params.items():
        if name not in MODELLED:
            raise ValueError(f"MULT18X18D parameter {name!r} is not in the simulation model "
                             f"(modelled: {', '.join(MODELLED)})")
        if value not in MODELLED[name]:
            raise ValueError(f"MULT18X18D {name}={value!r} is not modelled; the model "
                             f"implements {name} in {MODELLED[name]}")


def mult18x18d(m: Module, en: Value, a: Value, b: Value, p: Signal, name: str, *,
               a_reg: bool, b_reg: bool, p_reg: bool = True) -> None:
    """One ``MULT18X18D``: ``p = a * b``, signed, on the domain ``sync``.

    ``a`` and ``b`` are signed values of at most 18 bits (sign-extended to the
    DSP's 18).  With ``a_reg`` / ``b_reg`` the DSP's input register on that
    operand is used, with ``p_reg`` its output register, all clocked by
    ``CLK0`` = the ``sync`` clock with ``CE0 = en``: each behaves exactly like
    an Amaranth ``m.d.sync`` register under ``en`` (no reset: ``RST0`` is tied
    low).  ``p`` takes the low ``len(p)`` bits of the 36-bit product.
    """
    for what, v in (("a", a), ("b", b)):
        if len(v) > 18:
            raise ValueError(f"mult18x18d {name}: operand {what} has {len(v)} bits, at most 18")
    if len(p) > 36:
        raise ValueError(f"mult18x18d {name}: product has {len(p)} bits, at most 36")
    clk = lambda used: "CLK0" if used else "NONE"   # noqa: E731
    params = {"REG_INPUTA_CLK": clk(a_reg), "REG_INPUTB_CLK": clk(b_reg),
              "REG_OUTPUT_CLK": clk(p_reg)}
    params.update({k: v[0] for k, v in MODELLED.items() if k not in params})
    check_params(params)
    # Operands as 18-bit signals: each port bit is then a bit of a signal,
    # not a new wire per bit (which made Verilator builds several times slower).
    a18 = Signal(signed(18), name=f"{name}_a")
    b18 = Signal(signed(18), name=f"{name}_b")
    m.d.comb += [a18.eq(a.as_signed()), b18.eq(b.as_signed())]
    prod = Signal(36, name=f"{name}_p")
    ports = {}
    for k in range(18):
        ports[f"i_A{k}"] = a18[k]
        ports[f"i_B{k}"] = b18[k]
        ports[f"i_C{k}"] = 0
    for k in range(36):
        ports[f"o_P{k}"] = prod[k]
    # The shift inputs and the unused clocks, enables and resets stay
    # unconnected, as in Yosys's own MULT18X18D mapping: nextpnr cannot route
    # its constant-0 net to all of them (a design tying them fails to route).
    ports.update(i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
                 i_CLK0=ClockSignal(), i_CE0=en, i_RST0=0)
    m.submodules[name] = Instance("MULT18X18D", **{f"p_{k}": v for k, v in params.items()},
                                  **ports)
    m.d.comb += p.eq(prod[:len(p)])


def _model_text() -> str:
    ports = [f"{n}{k}" for n, w in _INPUTS for k in range(w)]
    ports += list(_CONTROLS)
    ports += [f"{n}{k}" for n, w in _OUTPUTS for k in range(w)] + ["SIGNEDP"]
    lines = [
        "// Behavioural model of the subset of the ECP5 MULT18X18D that",
        "// hetaccel.rtl.ecp5_dsp.mult18x18d instantiates; generated from its",
        "// MODELLED table.  Written from Lattice TN1267, not Lattice's library.",
        "`default_nettype none",
        "module MULT18X18D(" + ", ".join(ports) + ");",
    ]
    for k, vals in MODELLED.items():
        lines.append(f'    parameter {k} = "{vals[0]}";')
    for n, w in _INPUTS:
        lines.append("    input wire " + ", ".join(f"{n}{k}" for k in range(w)) + ";")
    lines.append("    input wire " + ", ".join(_CONTROLS) + ";")
    for n, w in _OUTPUTS:
        lines.append("    output wire " + ", ".join(f"{n}{k}" for k in range(w)) + ";")
    lines.append("    output wire SIGNEDP;")
    # A parameter outside the table instantiates a module that does not exist:
    # the build fails naming it, in Icarus and Verilator alike.
    for k, vals in MODELLED.items():
        cond = " && ".join(f'{k} != "{v}"' for v in vals)
        lines += [f"    generate if ({cond}) begin : bad_{k.lower()}",
                  f"        MULT18X18D_model_does_not_implement_{k} unmodelled();",
                  "    end endgenerate"]
    cat = lambda n, w: "{" + ", ".join(f"{n}{k}" for k in reversed(range(w))) + "}"  # noqa: E731
    lines += [
        f"    wire [17:0] a_in = {cat('A', 18)};",
        f"    wire [17:0] b_in = {cat('B', 18)};",
        "    reg [17:0] a_q = 18'd0, b_q = 18'd0;",
        "    reg sa_q = 1'b0, sb_q = 1'b0;",
        "    always @(posedge CLK0) if (RST0) begin",
        "        a_q <= 18'd0; b_q <= 18'd0; sa_q <= 1'b0; sb_q <= 1'b0;",
        "    end else if (CE0) begin",
        "        a_q <= a_in; b_q <= b_in; sa_q <= SIGNEDA; sb_q <= SIGNEDB;",
        "    end",
        '    wire [17:0] a_op = REG_INPUTA_CLK == "CLK0" ? a_q : a_in;',
        '    wire [17:0] b_op = REG_INPUTB_CLK == "CLK0" ? b_q : b_in;',
        '    wire a_sig = REG_INPUTA_CLK == "CLK0" ? sa_q : SIGNEDA;',
        '    wire b_sig = REG_INPUTB_CLK == "CLK0" ? sb_q : SIGNEDB;',
        "    wire [35:0] a_ext = {{18{a_sig & a_op[17]}}, a_op};",
        "    wire [35:0] b_ext = {{18{b_sig & b_op[17]}}, b_op};",
        "    wire [35:0] mult = a_ext * b_ext;",
        "    reg [35:0] p_q = 36'd0;",
        "    always @(posedge CLK0) if (RST0) p_q <= 36'd0; else if (CE0) p_q <= mult;",
        '    wire [35:0] p_out = REG_OUTPUT_CLK == "CLK0" ? p_q : mult;',
        '    assign SIGNEDP = a_sig | b_sig;',
    ]
    lines += [f"    assign P{k} = p_out[{k}];" for k in range(36)]
    for n, w in _OUTPUTS[:-1]:
        lines += [f"    assign {n}{k} = 1'b0;" for k in range(w)]
    lines += ["endmodule", "`default_nettype wire", ""]
    return "\n".join(lines)


def mult18x18d_model(directory: str | Path) -> Path:
    """Write the behavioural ``MULT18X18D`` model to ``directory``; returns the file.

    Compile it with a design that instantiates the cell through
    :func:`mult18x18d` (e.g. ``run_cocotb(..., extra_sources=(path,))``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "MULT18X18D_hetaccel_model.v"
    body = _model_text()
    if not path.exists() or path.read_text() != body:
        path.write_text(body)
    return path

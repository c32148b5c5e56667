"""Number formats of the units: activation functions and precisions, the
requant/activation datapath's field widths, and the Adam unit's modes and
hyperparameter registers (docs/numerics.md, docs/adam.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ActivationFunction", "ActivationPrecision", "ActivationFormat", "ACTIVATION_FORMAT",
           "INT32_MIN", "INT32_MAX", "MULTIPLIER_MAX", "SHIFT_MAX", "AdamMode", "ADAM_HYPERPARAMETERS"]


class ActivationFunction(enum.IntEnum):
    """Function applied by the activation unit after requantisation, chosen per row.

    In the int8 precision NONE and RELU act on the requantised code directly;
    SIGMOID, TANH and GELU look the code up in a 256-entry table.  In the
    16-bit precision every function is computed in fixed point (docs/numerics.md).
    """

    NONE = 0
    RELU = 1
    SIGMOID = 2
    TANH = 3
    GELU = 4


class ActivationPrecision(enum.IntEnum):
    """Number format of an activation pass (docs/numerics.md).

    INT8: accumulator -> int8 code -> int8 result (table or ReLU/identity).
    FIXED16: accumulator -> Q4.12 -> Q1.14 (sigmoid, tanh) or Q4.12 (none, ReLU, GELU).
    """

    INT8 = 0
    FIXED16 = 1


@dataclass(frozen=True)
class ActivationFormat:
    """Widths of the activation unit's parameters and fixed-point formats.

    One requant parameter per channel: ``bias`` (signed), ``multiplier``
    (unsigned, a Q0.31 fraction when normalised) and ``shift`` (total right
    shift); result = sat(round((sat32(acc + bias) * multiplier) >> shift)).
    """

    bias_bits: int = 32
    multiplier_bits: int = 31
    shift_bits: int = 6          # right shift 0..63
    table_entries: int = 256     # one per int8 code
    out_bits: int = 16           # every result lane is int16 (int8 sign-extended)
    fixed_in_frac: int = 12      # Q4.12 input of the 16-bit path
    fixed_out_frac: int = 14     # Q1.14 sigmoid/tanh output (none/relu/gelu stay Q4.12)


#: The one instance every activation generator, model and host helper uses.
ACTIVATION_FORMAT = ActivationFormat()

#: Saturation bounds of the bias add (the bias's own range) and the largest
#: multiplier and shift a channel can hold.
INT32_MIN = -(1 << (ACTIVATION_FORMAT.bias_bits - 1))
INT32_MAX = (1 << (ACTIVATION_FORMAT.bias_bits - 1)) - 1
MULTIPLIER_MAX = (1 << ACTIVATION_FORMAT.multiplier_bits) - 1
SHIFT_MAX = (1 << ACTIVATION_FORMAT.shift_bits) - 1


class AdamMode(enum.IntFlag):
    """Weight-decay mode bits of the Adam unit (its 2-bit ``mode`` input).

    ``L2`` adds ``weight_decay * p`` to the gradient (``torch.optim.Adam``);
    ``DECOUPLED`` decays the parameter, ``p - (lr*weight_decay)*p``, before the
    update (``torch.optim.AdamW``).  The bits are independent; both set
    applies both (L2 reads the parameter before the decoupled scaling).
    """

    NONE = 0
    L2 = 1
    DECOUPLED = 2


#: fp32 hyperparameter inputs of the Adam unit, in register order.  The host
#: computes every one of them from (lr, betas, eps, weight_decay, step) with
#: ``hetaccel.sim.adam_model.hyperparameters``; the RTL port names, the model's
#: dict keys and the device registers all come from this tuple (plus ``mode``,
#: an :class:`AdamMode` value).  See docs/adam.md.
ADAM_HYPERPARAMETERS: tuple[str, ...] = (
    "beta1",            # b1
    "one_minus_beta1",  # 1 - b1
    "beta2",            # b2
    "one_minus_beta2",  # 1 - b2
    "eps",              # eps
    "weight_decay",     # wd (L2 mode)
    "lr_wd",            # lr*wd (DECOUPLED mode: p - lr_wd*p)
    "bc2_rsqrt",        # 1 / sqrt(1 - b2**step)
    "step_size",        # lr / (1 - b1**step)
)

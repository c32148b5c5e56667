"""Bit-exact NumPy model of the Adam/AdamW unit, and the host's register values.

The RTL (``hetaccel.rtl.adam.AdamUnit``) is built from correctly rounded
binary32 operations, so evaluating the same operations in the same order with
``numpy.float32`` gives the same bits; the only adjustment is that every NaN
result is replaced by the canonical quiet NaN ``0x7FC00000`` the hardware
produces.  See docs/adam.md for the operation order and special values.

``hyperparameters`` is the host CPU's side of the contract: it turns the
PyTorch-style arguments and the step number into the fp32 register values
(bias corrections included) the unit reads.  ``l1_gradient`` is the L1
regularisation term the host adds to the gradient before the step.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from ..spec import ADAM_HYPERPARAMETERS, AdamMode

__all__ = ["hyperparameters", "hp_floats", "adam_step", "adam_reference",
           "l1_gradient", "canonical_nan", "CANONICAL_NAN"]

CANONICAL_NAN = 0x7FC00000


def _f32_bits(x: float) -> int:
    return int(np.array([x], dtype=np.float32).view(np.uint32)[0])


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a real number, not {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def hyperparameters(lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                    weight_decay: float = 0.0, step: int = 1,
                    decoupled: bool = False) -> dict:
    """Register values of the Adam unit for optimizer step ``step``.

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    betas : (float, float)
        ``(beta1, beta2)``, each in [0, 1).
    eps : float
        > 0, added to the bias-corrected ``sqrt(v)``.
    weight_decay : float
        >= 0.  With ``decoupled=False`` it is the L2 coefficient
        (``torch.optim.Adam``); with ``decoupled=True`` the decoupled decay
        (``torch.optim.AdamW``).  Zero selects no decay at all.
    step : int
        1-based step number ``t`` of the bias corrections ``1 - beta**t``.
    decoupled : bool
        AdamW (True) or Adam with L2 (False).

    Returns
    -------
    dict
        ``{name: uint32 bit pattern}`` for every name in
        ``hetaccel.spec.ADAM_HYPERPARAMETERS``, plus ``"mode"`` (an
        :class:`~hetaccel.spec.AdamMode` value as int).  Constants are computed
        in float64 and rounded once to binary32.

    Raises
    ------
    ValueError
        lr <= 0, a beta outside [0, 1), eps <= 0, weight_decay < 0, step < 1,
        a non-finite value, or a constant that overflows binary32.
    """
    lr = _real("lr", lr)
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
    beta1 = _real("beta1", beta1)
    beta2 = _real("beta2", beta2)
    for name, b in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {b!r}")
    eps = _real("eps", eps)
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    weight_decay = _real("weight_decay", weight_decay)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    if not isinstance(decoupled, (bool, np.bool_)):
        raise ValueError(f"decoupled must be a bool, got {decoupled!r}")
    step = int(step)

    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    values = {
        "beta1": beta1,
        "one_minus_beta1": 1.0 - beta1,
        "beta2": beta2,
        "one_minus_beta2": 1.0 - beta2,
        "eps": eps,
        "weight_decay": weight_decay,
        "lr_wd": lr * weight_decay,
        "bc2_rsqrt": 1.0 / math.sqrt(bc2),
        "step_size": lr / bc1,
    }
    assert tuple(values) == ADAM_HYPERPARAMETERS
    regs = {}
    with np.errstate(over="ignore"):
        for name, value in values.items():
            bits = _f32_bits(value)
            if (bits >> 23) & 0xFF == 0xFF:
                raise ValueError(f"{name} = {value!r} (from lr={lr}, betas={betas}, "
                                 f"eps={eps}, weight_decay={weight_decay}, step={step}) "
                                 f"does not fit binary32")
            regs[name] = bits
    if weight_decay == 0.0:
        mode = AdamMode.NONE
    elif decoupled:
        mode = AdamMode.DECOUPLED
    else:
        mode = AdamMode.L2
    regs["mode"] = int(mode)
    return regs


def hp_floats(hp: dict) -> dict:
    """The fp32 registers of ``hp`` as ``numpy.float32`` scalars (and ``mode``)."""
    missing = [k for k in (*ADAM_HYPERPARAMETERS, "mode") if k not in hp]
    if missing:
        raise ValueError(f"hyperparameter dict lacks {', '.join(missing)}")
    out = {}
    for name in ADAM_HYPERPARAMETERS:
        bits = hp[name]
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) \
                or not 0 <= int(bits) < 1 << 32:
            raise ValueError(f"{name} must be a uint32 bit pattern, got {bits!r}")
        out[name] = np.array([bits], dtype=np.uint32).view(np.float32)[0]
    mode = hp["mode"]
    if isinstance(mode, bool) or not isinstance(mode, (int, np.integer)) or not 0 <= mode <= 3:
        raise ValueError(f"mode must be an integer in [0, 3] (AdamMode bits), got {mode!r}")
    out["mode"] = int(mode)
    return out


def canonical_nan(x: np.ndarray) -> np.ndarray:
    """``x`` (float32) with every NaN replaced by the canonical quiet NaN."""
    x = np.array(x, dtype=np.float32, copy=True)
    x.view(np.uint32)[np.isnan(x)] = CANONICAL_NAN
    return x


def _check_tensors(**tensors) -> int:
    n = None
    for name, t in tensors.items():
        if not isinstance(t, np.ndarray):
            raise ValueError(f"{name} must be a numpy.ndarray of float32, not {type(t).__name__}")
        if t.dtype != np.float32:
            raise ValueError(f"{name} must have dtype float32, got {t.dtype}")
        if n is None:
            n = t.shape
        elif t.shape != n:
            shapes = ", ".join(f"{k}={v.shape}" for k, v in tensors.items())
            raise ValueError(f"param, grad, m and v must have the same shape, got {shapes}")
    return n


def adam_step(param, grad, m, v, hp: dict):
    """One optimizer step, bit-exact with ``AdamUnit``.

    Parameters
    ----------
    param, grad, m, v : numpy.ndarray of float32, all the same shape
    hp : dict
        Register values from :func:`hyperparameters`.

    Returns
    -------
    (param, m, v) : new float32 arrays (inputs untouched); NaNs canonical.
    """
    _check_tensors(param=param, grad=grad, m=m, v=v)
    h = hp_floats(hp)
    p, g = param, grad
    with np.errstate(all="ignore"):
        if h["mode"] & AdamMode.L2:
            g = g + h["weight_decay"] * param
        if h["mode"] & AdamMode.DECOUPLED:
            p = param - h["lr_wd"] * param
        m2 = h["beta1"] * m + h["one_minus_beta1"] * g
        v2 = h["beta2"] * v + h["one_minus_beta2"] * (g * g)
        denom = np.sqrt(v2) * h["bc2_rsqrt"] + h["eps"]
        p2 = p - (m2 / denom) * h["step_size"]
    for arr in (p2, m2, v2):
        assert arr.dtype == np.float32
    return canonical_nan(p2), canonical_nan(m2), canonical_nan(v2)


def adam_reference(param, grad, m, v, *, lr, betas=(0.9, 0.999), eps=1e-8,
                   weight_decay=0.0, step=1, decoupled=False):
    """Independent float64 evaluation of the textbook formula (torch.optim order).

    Used only to measure the fidelity of the fp32 unit; it shares no code
    with :func:`adam_step` and takes the user's hyperparameters, not the
    registers.
    """
    p = np.asarray(param, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    b1, b2 = betas
    if weight_decay != 0 and not decoupled:
        g = g + weight_decay * p
    if weight_decay != 0 and decoupled:
        p = p * (1 - lr * weight_decay)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    bias_correction1 = 1 - b1 ** step
    bias_correction2 = 1 - b2 ** step
    denom = np.sqrt(v) / math.sqrt(bias_correction2) + eps
    p = p - (lr / bias_correction1) * m / denom
    return p, m, v


def l1_gradient(param, lam: float) -> np.ndarray:
    """Host-side L1 regularisation term ``sign(p) * lam`` (float32).

    The unit has no L1 mode: L1 is added to the gradient on the host before
    the step, ``grad + l1_gradient(param, lam)``, which is the subgradient of
    ``lam * sum(|p|)`` (0 at ``p == ±0``; NaN stays NaN).

    Raises
    ------
    ValueError
        ``lam`` negative or not finite, ``param`` not a float32 array.
    """
    lam = _real("lam", lam)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    if not isinstance(param, np.ndarray) or param.dtype != np.float32:
        raise ValueError(f"param must be a numpy.ndarray of float32, got "
                         f"{getattr(param, 'dtype', type(param).__name__)}")
    return (np.sign(param) * np.float32(lam)).astype(np.float32)

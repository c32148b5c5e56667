"""hetaccel: an open accelerator generator for transformer workloads.

Subpackages: :mod:`hetaccel.rtl` (Amaranth generators), :mod:`hetaccel.sim`
(bit-exact models, Verilog export, cocotb harness), :mod:`hetaccel.host` (the
runtime) and :mod:`hetaccel.boards` (FPGA and ASIC builds).  Every one of them
derives its parameters from :class:`hetaccel.spec.AcceleratorConfig`.
"""

from .spec import AcceleratorConfig, DEFAULT_CONFIG

__version__ = "0.1.0"
__all__ = ["AcceleratorConfig", "DEFAULT_CONFIG", "__version__"]

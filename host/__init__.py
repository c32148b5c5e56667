"""The host runtime: one Python API over the emulator, the RTL simulation and boards.

``from hetaccel.host import Accelerator``; see :mod:`hetaccel.host.accelerator`.
"""

from .accelerator import (Accelerator, AcceleratorError, DeviceResetError, DeviceStatusError,
                          LinkError)

__all__ = ["Accelerator", "AcceleratorError", "LinkError", "DeviceStatusError",
           "DeviceResetError"]

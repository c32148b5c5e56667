"""The host runtime: one Python API over the emulator, the RTL simulation and boards.

``from hetaccel.host import Accelerator``; see :mod:`hetaccel.host.accelerator`.
The runtime's parts: :mod:`~hetaccel.host.planner` (how every operation is
scheduled on a device and what it costs on each board image),
:mod:`~hetaccel.host.session` (the link session: sequence numbers, retries,
recovery), :mod:`~hetaccel.host.transport` and :mod:`~hetaccel.host.rtl_transport`
(where the bytes go), :mod:`~hetaccel.host.tensors` (tensors resident in device
memory) and :mod:`~hetaccel.host.profiler` (what each operation did).
"""

from .accelerator import (Accelerator, AcceleratorError, DeviceMemoryFull, DeviceResetError,
                          DeviceStatusError, DeviceTensor, LinkError)

__all__ = ["Accelerator", "AcceleratorError", "LinkError", "DeviceStatusError",
           "DeviceResetError", "DeviceTensor", "DeviceMemoryFull"]

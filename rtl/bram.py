"""Block RAM read ports that synthesis maps without read-during-write logic."""

from __future__ import annotations

from amaranth.hdl import Signal

__all__ = ["RegisteredReadPort"]


class RegisteredReadPort:
    """A synchronous, non-transparent read port of ``mem``, built as an
    asynchronous port followed by a register.

    Yosys folds the register into the block RAM's port and then honours the
    memory's ``no_rw_check`` attribute; from ``mem.read_port()`` it keeps its
    read-during-write emulation (a delayed write port and a multiplexer on
    the read data) whatever the attribute says.  Same behaviour as
    ``mem.read_port()``: ``data`` is the row at ``addr`` before the clock edge
    at which the port was enabled, held while it is not.

    Parameters
    ----------
    m : Module
        Where the register goes (``sync`` domain).
    mem : amaranth.lib.memory.Memory
        The memory (already a submodule of ``m`` or of its parent).
    data_name : str
        Name of the data register.
    en : Value or str or None
        The enable: an existing value; a name, to create ``self.en`` as a
        signal for the caller to drive; or ``None`` (always enabled).
    src_loc_at : int
        Stack frames above the caller to take the port's name from.

    Attributes
    ----------
    addr : Signal
        The address, driven by the caller.
    en : Value or Signal or None
        The enable, as given (a new signal when ``en`` was a name).
    data : Signal(mem.shape)
        The registered read data (reset-less: the block RAM's output
        register has no reset).
    """

    def __init__(self, m, mem, data_name: str, en=None, *, src_loc_at: int = 0):
        # (the port's signals are named after the caller's variable, as
        # mem.read_port() would name them)
        port = mem.read_port(domain="comb", src_loc_at=1 + src_loc_at)
        self.addr = port.addr
        self.en = Signal(name=en) if isinstance(en, str) else en
        self.data = Signal(mem.shape, name=data_name, reset_less=True)
        if self.en is None:
            m.d.sync += self.data.eq(port.data)
        else:
            with m.If(self.en):
                m.d.sync += self.data.eq(port.data)

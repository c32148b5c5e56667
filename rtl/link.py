"""Host link: framed byte protocol between the host and the command processor.

:class:`HostLink` turns a byte stream from a PHY (the UART on boards, bytes
injected directly in simulation) into checked frames, and frames the
consumer's replies.  Frame format, statuses and resynchronisation rules are in
docs/protocol.md; the Python reference is :mod:`hetaccel.host.protocol` (the
parser) and :class:`hetaccel.sim.link_model.LinkModel` (this link, bit- and
event-exact).

Ports
-----
``rx`` : In(stream.Signature(8))
    Request bytes.  ``rx.ready`` drops for the cycle after each frame's last
    CRC byte, and on the last header byte and the last CRC byte while the
    queue of the link's own error replies (4 entries) is full, i.e. when the
    host sends bad frames faster than the replies drain.
``tx`` : Out(stream.Signature(8))
    Reply bytes.
``frame`` : Out(stream.Signature(FRAME_INFO))
    One transfer per good frame, payload ``{"opcode": 8, "seq": 8, "length": 16}``.
    While ``frame.valid`` the consumer reads the frame's payload bytes through
    ``payload_addr`` / ``payload_data``; asserting ``frame.ready`` releases the
    frame buffer (so do it once the payload is no longer needed).
``payload_addr`` : In(range(max_payload))
    Byte offset into the payload of the frame offered on ``frame``.
``payload_data`` : Out(8)
    The byte at ``payload_addr``, valid **one cycle after** the address
    (synchronous block-RAM read; not transparent).  After ``frame.ready`` the
    data refers to the next frame.
``reply`` : In(stream.Signature(REPLY_HEADER))
    Reply header ``{"status": 8, "seq": 8, "length": 16}``; after it the link
    takes exactly ``length`` bytes from ``reply_data``.  ``length`` must not
    exceed ``max_payload`` (the link keeps only the bits that need).  The link adds the sync
    byte and the CRC.
``reply_data`` : In(stream.Signature(8))
    Reply payload bytes, passed through to ``tx`` combinationally
    (``tx.valid = reply_data.valid``, ``reply_data.ready = tx.ready``).
``busy`` : Out(1)
    A request is being received (between its sync byte and its last CRC byte)
    or a reply is being sent; for idle detection and counters.

Behaviour
---------
``config.link_buffers`` frame buffers of ``config.max_payload`` bytes each
(one :class:`amaranth.lib.memory.Memory`).  When a header with a legal length
completes and every buffer holds an unreleased frame, the frame is still
received (not stored); a good CRC is answered BUSY by the link itself.  A
length above ``max_payload`` is answered BAD_LENGTH as soon as the header is
complete and the link hunts for the next sync byte; a CRC mismatch is answered
BAD_CRC.  These replies carry the frame's sequence number and no payload, and
take priority over the consumer's next reply (a reply already being sent is
never interrupted).  ``config.link_timeout_cycles`` cycles without a byte in
the middle of a frame abandon it silently.  The verdict on a frame (deliver,
BAD_CRC or BUSY) is taken the cycle after its last CRC byte, in which
``rx.ready`` is low.  Rejected frames never reach
``frame`` and never write a buffer that holds an unreleased frame.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..host.protocol import LINK, crc16_update
from ..spec import AcceleratorConfig, Status

__all__ = ["HostLink", "FRAME_INFO", "REPLY_HEADER", "crc16_next", "one_hot"]

FRAME_INFO = data.StructLayout({"opcode": 8, "seq": 8, "length": 16})
REPLY_HEADER = data.StructLayout({"status": 8, "seq": 8, "length": 16})

#: depth of the queue of the link's own error replies
ERROR_QUEUE_DEPTH = 4
#: statuses the link answers by itself, queued as an index into this tuple
_OWN_STATUSES = (Status.BAD_LENGTH, Status.BAD_CRC, Status.BUSY)


def one_hot(fsm) -> None:
    """Have synthesis encode ``fsm`` (an Amaranth ``m.FSM``, after its block) one-hot.

    Yosys re-encodes an FSM only if its state register has no initial value
    (every Amaranth register has one) or carries ``fsm_encoding``.  One-hot,
    a state test is a flip-flop rather than a compare of the state code
    (two LUT levels on the iCE40 beyond 16 states, in front of every enable
    the FSM drives).  Only synthesis sees it: simulation and the formal
    checks (Yosys ``prep``, no FSM pass) keep the binary code.  The encoding's
    unused codes are unreachable from reset, which the boards assert at power-up.
    """
    fsm._data["signal"].attrs["fsm_encoding"] = "one-hot"


def _crc_matrix():
    # crc16_update is linear over GF(2) in (crc, byte), so each next-state bit is
    # the XOR of the input bits whose unit vectors set it.  Deriving the network
    # from the Python reference keeps one definition of the CRC.
    crc_cols = [crc16_update(1 << j, 0) for j in range(16)]
    byte_cols = [crc16_update(0, 1 << k) for k in range(8)]
    return crc_cols, byte_cols


def crc16_next(crc, byte):
    """Amaranth expression: ``crc`` (16 bits) after one more ``byte``."""
    crc_cols, byte_cols = _crc_matrix()
    bits = []
    for i in range(16):
        terms = [crc[j] for j in range(16) if crc_cols[j] >> i & 1]
        terms += [byte[k] for k in range(8) if byte_cols[k] >> i & 1]
        acc = terms[0]
        for t in terms[1:]:
            acc = acc ^ t
        bits.append(acc)
    return Cat(*bits)


class HostLink(wiring.Component):
    """Framed, CRC-checked host link with its own error replies (see module doc).

    Parameters
    ----------
    config : AcceleratorConfig
        Uses ``max_payload``, ``link_buffers`` and ``link_timeout_cycles``.
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
        self.config = config
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "frame": Out(stream.Signature(FRAME_INFO)),
            "payload_addr": In(range(config.max_payload)),
            "payload_data": Out(8),
            "reply": In(stream.Signature(REPLY_HEADER)),
            "reply_data": In(stream.Signature(8)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        nbuf = cfg.link_buffers
        off_bits = max(1, (cfg.max_payload - 1).bit_length())
        buf_bits = max(1, (nbuf - 1).bit_length())

        # ---------------- frame buffers -------------------------------------
        m.submodules.buffers = mem = memory.Memory(shape=8, depth=nbuf << off_bits, init=[])
        wp = mem.write_port()
        rp = mem.read_port(transparent_for=())

        head = Signal(range(nbuf))          # oldest delivered frame (offered on `frame`)
        tail = Signal(range(nbuf))          # buffer the next good frame goes to
        used = Signal(range(nbuf + 1))      # delivered, not yet released
        meta = Array(Signal(FRAME_INFO.size, name=f"meta{i}") for i in range(nbuf))

        m.d.comb += [
            self.frame.valid.eq(used != 0),
            self.frame.payload.eq(meta[head]),
            rp.addr.eq(Cat(self.payload_addr[:off_bits], head[:buf_bits] if nbuf > 1 else Const(0, 1))),
            self.payload_data.eq(rp.data),
        ]
        release = Signal()
        deliver = Signal()
        m.d.comb += release.eq(self.frame.valid & self.frame.ready)

        def wrap_inc(ptr):
            return Mux(ptr == nbuf - 1, 0, ptr + 1)

        with m.If(release):
            m.d.sync += head.eq(wrap_inc(head))
        with m.If(deliver):
            m.d.sync += tail.eq(wrap_inc(tail))
        with m.If(release & ~deliver):
            m.d.sync += used.eq(used - 1)
        with m.Elif(deliver & ~release):
            m.d.sync += used.eq(used + 1)

        # ---------------- own replies ---------------------------------------
        code_bits = (len(_OWN_STATUSES) - 1).bit_length()
        m.submodules.errq = errq = fifo.SyncFIFOBuffered(width=code_bits + 8,
                                                         depth=ERROR_QUEUE_DEPTH)

        r_badlen = Signal()                 # queue a BAD_LENGTH reply (see CODE)
        m.d.sync += r_badlen.eq(0)

        def own_reply(status):
            return [errq.w_en.eq(1), errq.w_data.eq(Cat(Const(_OWN_STATUSES.index(status),
                                                              code_bits), r_seq))]

        # ---------------- receiver ------------------------------------------
        rx = self.rx
        byte = rx.payload
        take = Signal()                     # a byte is accepted this cycle
        m.d.comb += take.eq(rx.valid & rx.ready)

        r_len = Signal(16)
        r_seq = Signal(8)
        r_op = Signal(8)
        r_cnt = Signal(off_bits)            # payload byte offset (the length fits max_payload)
        r_crc = Signal(16)
        r_crc_lo = Signal(8)
        r_drop = Signal()                   # no free buffer: receive but do not store
        r_idle = Signal(range(cfg.link_timeout_cycles))
        r_idle_full = Signal()
        rx_active = Signal()

        r_left = Signal(range(cfg.max_payload + 1))     # payload bytes still to come
        len_bad = Signal()                  # registered with the length's high byte
        crc_good = Signal()
        r_crc_ok = Signal()
        m.d.comb += crc_good.eq(Cat(r_crc_lo, byte) == r_crc)

        with m.If(take):
            m.d.sync += [r_idle.eq(0), r_idle_full.eq(0)]

        def crc_step():
            m.d.sync += r_crc.eq(crc16_next(r_crc, byte))

        # inter-byte timeout: link_timeout_cycles consecutive cycles with no byte
        # offered mid-frame.  Cycles stalled by the link itself do not count.
        timeout = Signal()
        # r_idle_full == (r_idle == link_timeout_cycles - 1), kept as a flip-flop
        # so the wide comparison stays off the receiver's state logic
        m.d.comb += timeout.eq(rx_active & ~rx.valid & r_idle_full)
        with m.If(rx_active & ~rx.valid & ~timeout):
            m.d.sync += [r_idle.eq(r_idle + 1),
                         r_idle_full.eq(r_idle == cfg.link_timeout_cycles - 2)]
        with m.Elif(~rx.valid):
            m.d.sync += [r_idle.eq(0), r_idle_full.eq(0)]

        def on_timeout():
            with m.If(timeout):
                m.next = "HUNT"

        with m.FSM(name="rx_fsm") as rx_fsm:
            with m.State("HUNT"):
                m.d.comb += rx.ready.eq(1)
                # (the CRC starts over in every cycle here, so its enable
                # does not wait for the sync byte compare)
                m.d.sync += r_crc.eq(LINK.crc_init)
                with m.If(rx.valid & (byte == LINK.sync_request)):
                    m.next = "LEN_LO"
            with m.State("LEN_LO"):
                on_timeout()
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    m.d.sync += r_len[:8].eq(byte)
                    crc_step()
                    m.next = "LEN_HI"
            with m.State("LEN_HI"):
                on_timeout()
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    m.d.sync += [r_len[8:].eq(byte),
                                 len_bad.eq(Cat(r_len[:8], byte) > cfg.max_payload)]
                    crc_step()
                    m.next = "SEQ"
            with m.State("SEQ"):
                on_timeout()
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    m.d.sync += r_seq.eq(byte)
                    crc_step()
                    m.next = "CODE"
            with m.State("CODE"):
                on_timeout()
                # A bad length is answered right away: wait for room in the queue.
                # (ready does not look at len_bad: keeps the byte path short.)
                m.d.comb += rx.ready.eq(errq.w_rdy)
                with m.If(take):
                    m.d.sync += [r_op.eq(byte), r_cnt.eq(0), r_left.eq(r_len),
                                 r_drop.eq(used == nbuf)]
                    crc_step()
                    with m.If(len_bad):
                        # queued from a flip-flop in the next cycle (the
                        # queue had room now and nothing else writes it in
                        # between), so the queue's write does not wait for
                        # this byte's handshake
                        m.d.sync += r_badlen.eq(1)
                        m.next = "HUNT"
                    with m.Elif(r_len == 0):
                        m.next = "CRC_LO"
                    with m.Else():
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                on_timeout()
                m.d.comb += rx.ready.eq(1)
                m.d.comb += [
                    wp.addr.eq(Cat(r_cnt[:off_bits], tail[:buf_bits] if nbuf > 1 else Const(0, 1))),
                    wp.data.eq(byte),
                    wp.en.eq(take & ~r_drop),
                ]
                with m.If(take):
                    crc_step()
                    m.d.sync += [r_cnt.eq(r_cnt + 1), r_left.eq(r_left - 1)]
                    with m.If(r_left == 1):
                        m.next = "CRC_LO"
            with m.State("CRC_LO"):
                on_timeout()
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    m.d.sync += r_crc_lo.eq(byte)
                    m.next = "CRC_HI"
            with m.State("CRC_HI"):
                on_timeout()
                # The frame may need a reply of the link's own: wait for room in
                # the queue (conservatively, so ready does not depend on the CRC).
                m.d.comb += rx.ready.eq(errq.w_rdy)
                with m.If(take):
                    m.d.sync += r_crc_ok.eq(crc_good)
                    m.next = "CHECK"
            with m.State("CHECK"):
                # One cycle for the verdict, so the CRC comparison of the last byte
                # does not drive the buffer bookkeeping in the same cycle.
                with m.If(~r_crc_ok):
                    m.d.comb += own_reply(Status.BAD_CRC)
                with m.Elif(r_drop):
                    m.d.comb += own_reply(Status.BUSY)
                with m.Else():
                    m.d.comb += deliver.eq(1)
                    m.d.sync += meta[tail].eq(Cat(r_op, r_seq, r_len))
                m.next = "HUNT"
        with m.If(r_badlen):
            m.d.comb += own_reply(Status.BAD_LENGTH)
        m.d.comb += rx_active.eq(~rx_fsm.ongoing("HUNT"))

        # ---------------- transmitter ---------------------------------------
        tx = self.tx
        t_status = Signal(8)
        t_seq = Signal(8)
        t_len = Signal(range(cfg.max_payload + 1))
        t_left = Signal(range(cfg.max_payload + 1))
        t_crc = Signal(16)
        t_byte = Signal(8)
        sent = Signal()
        m.d.comb += [tx.payload.eq(t_byte), sent.eq(tx.valid & tx.ready)]

        with m.FSM(name="tx_fsm") as tx_fsm:
            with m.State("IDLE"):
                with m.If(errq.r_rdy):
                    m.d.comb += errq.r_en.eq(1)
                    with m.Switch(errq.r_data[:code_bits]):
                        for i, st in enumerate(_OWN_STATUSES):
                            with m.Case(i):
                                m.d.sync += t_status.eq(st)
                    m.d.sync += [t_seq.eq(errq.r_data[code_bits:]), t_len.eq(0)]
                    m.next = "SYNC"
                with m.Elif(self.reply.valid):
                    m.d.comb += self.reply.ready.eq(1)
                    m.d.sync += [t_status.eq(self.reply.payload.status),
                                 t_seq.eq(self.reply.payload.seq),
                                 t_len.eq(self.reply.payload.length)]
                    m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += [tx.valid.eq(1), t_byte.eq(LINK.sync_reply)]
                with m.If(sent):
                    m.d.sync += [t_crc.eq(LINK.crc_init), t_left.eq(t_len)]
                    m.next = "LEN_LO"
            for state, value, nxt in (("LEN_LO", t_len[:8], "LEN_HI"),
                                      ("LEN_HI", t_len[8:], "SEQ"),
                                      ("SEQ", t_seq, "CODE")):
                with m.State(state):
                    m.d.comb += [tx.valid.eq(1), t_byte.eq(value)]
                    with m.If(sent):
                        m.d.sync += t_crc.eq(crc16_next(t_crc, t_byte))
                        m.next = nxt
            with m.State("CODE"):
                m.d.comb += [tx.valid.eq(1), t_byte.eq(t_status)]
                with m.If(sent):
                    m.d.sync += t_crc.eq(crc16_next(t_crc, t_byte))
                    with m.If(t_len == 0):
                        m.next = "CRC_LO"
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [tx.valid.eq(self.reply_data.valid),
                             t_byte.eq(self.reply_data.payload),
                             self.reply_data.ready.eq(tx.ready)]
                with m.If(sent):
                    m.d.sync += [t_crc.eq(crc16_next(t_crc, t_byte)), t_left.eq(t_left - 1)]
                    with m.If(t_left == 1):
                        m.next = "CRC_LO"
            with m.State("CRC_LO"):
                m.d.comb += [tx.valid.eq(1), t_byte.eq(t_crc[:8])]
                with m.If(sent):
                    m.next = "CRC_HI"
            with m.State("CRC_HI"):
                m.d.comb += [tx.valid.eq(1), t_byte.eq(t_crc[8:])]
                with m.If(sent):
                    m.next = "IDLE"

        m.d.comb += self.busy.eq(rx_active | ~tx_fsm.ongoing("IDLE"))
        one_hot(rx_fsm)
        one_hot(tx_fsm)
        return m

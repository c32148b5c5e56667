"""Host link: framed byte protocol between the host and the command processor.

:class:`HostLink` turns a byte stream from a PHY (the UART on boards, bytes
injected directly in simulation) into checked frames, and frames the
consumer's replies.  Frame format, statuses and resynchronisation rules are in
docs/protocol.md; the Python reference is :mod:`hetaccel.spec.link` (the
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
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec.link import LINK, crc16_update
from ..spec import AcceleratorConfig, Status
from .bram import RegisteredReadPort

__all__ = ["HostLink", "FRAME_INFO", "REPLY_HEADER", "crc16_next"]

FRAME_INFO = data.StructLayout({"opcode": 8, "seq": 8, "length": 16})
REPLY_HEADER = data.StructLayout({"status": 8, "seq": 8, "length": 16})

#: depth of the queue of the link's own error replies
ERROR_QUEUE_DEPTH = 4
#: statuses the link answers by itself, queued as an index into this tuple
_OWN_STATUSES = (Status.BAD_LENGTH, Status.BAD_CRC, Status.BUSY)


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
        # no_rw_check: a read never needs the byte written to its address in
        # the same cycle (the receiver writes only a buffer that holds no
        # delivered frame, and delivers it three cycles after its last byte),
        # so Yosys adds no read-during-write bypass around the block RAM
        # (a delayed write port and a mux on the read data, on the iCE40).
        m.submodules.buffers = mem = memory.Memory(shape=8, depth=nbuf << off_bits, init=[],
                                                   attrs={"no_rw_check": 1})
        wp = mem.write_port()
        rp = RegisteredReadPort(m, mem, "rp_data")

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
        # A queue of flip-flops whose `full` and `nonempty` flags are
        # flip-flops themselves: `full` gates rx.ready, so the receiver's
        # state and CRC enables are one LUT closer to their flip-flops than
        # with a FIFO's level compare.  The receiver writes it only after
        # checking `full` (and nothing else writes it in between), so a write
        # never meets a full queue.
        # The entries shift towards entry 0 as the head is taken, so the
        # head (what the transmitter loads) is a flip-flop, not a read mux.
        q_depth = ERROR_QUEUE_DEPTH
        q_mem = [Signal(code_bits + 8, name=f"errq{i}", reset_less=True)
                 for i in range(q_depth)]
        q_level = Signal(range(q_depth + 1))
        q_full = Signal()
        q_nonempty = Signal()
        q_w = Signal()                      # write q_wdata (own_reply)
        q_wdata = Signal(code_bits + 8)
        q_r = Signal()                      # the transmitter takes q_rdata
        q_rdata = q_mem[0]
        for i in range(q_depth):
            # the write goes behind the entries that stay
            with m.If(q_w & Mux(q_r, q_level == i + 1, q_level == i)):
                m.d.sync += q_mem[i].eq(q_wdata)
            if i + 1 < q_depth:
                with m.Elif(q_r):
                    m.d.sync += q_mem[i].eq(q_mem[i + 1])
        q_nonempty_next = Signal()
        m.d.comb += q_nonempty_next.eq(q_nonempty)
        with m.If(q_w & ~q_r):
            m.d.sync += [q_level.eq(q_level + 1), q_full.eq(q_level == q_depth - 1)]
            m.d.comb += q_nonempty_next.eq(1)
        with m.Elif(q_r & ~q_w):
            m.d.sync += [q_level.eq(q_level - 1), q_full.eq(0)]
            m.d.comb += q_nonempty_next.eq(q_level != 1)
        m.d.sync += q_nonempty.eq(q_nonempty_next)

        r_badlen = Signal()                 # queue a BAD_LENGTH reply (see CODE)
        m.d.sync += r_badlen.eq(0)

        def own_reply(status):
            return [q_w.eq(1), q_wdata.eq(Cat(Const(_OWN_STATUSES.index(status), code_bits),
                                              r_seq))]

        # ---------------- receiver ------------------------------------------
        # The receiver and the transmitter are one-hot state machines written
        # out as one flip-flop per state, with every compare their transitions
        # need (length zero or one, last payload byte, sync byte) kept in a
        # flip-flop or next to the state bit, so each next state, `rx.ready`
        # and each register enable is two or three LUT levels from flip-flops
        # (a Yosys-mapped `m.FSM` put 6-7 in front of its state register, the
        # iCEBreaker's critical paths at 50 MHz).
        rx = self.rx
        byte = rx.payload
        valid = rx.valid
        take = Signal()                     # a byte is accepted this cycle

        def states(prefix, names, first):
            return {n: Signal(init=(n == first), name=f"{prefix}_{n.lower()}") for n in names}

        # CODE_BAD is the CODE byte of a frame whose length is too long
        s = states("rx", ("HUNT", "LEN_LO", "LEN_HI", "SEQ", "CODE", "CODE_BAD", "PAYLOAD",
                          "CRC_LO", "CRC_HI", "CHECK"), "HUNT")
        # CODE, CODE_BAD or CRC_HI: the states whose byte may need a reply of
        # the link's own, taken only while the queue has room (a flip-flop set
        # with them)
        s_qwait = Signal()

        # (the data registers need no reset: each is loaded before it is used
        # in a frame, and HUNT / IDLE follow reset)
        r_len = Signal(16, reset_less=True)
        r_len0 = Signal(reset_less=True)    # r_len == 0, registered with its high byte
        r_seq = Signal(8, reset_less=True)
        r_op = Signal(8, reset_less=True)
        r_cnt = Signal(off_bits, reset_less=True)   # payload byte offset (fits max_payload)
        r_crc = Signal(16, reset_less=True)
        r_crc_lo = Signal(8, reset_less=True)
        r_drop = Signal()                   # no free buffer: receive but do not store
        r_idle = Signal(range(cfg.link_timeout_cycles))
        r_idle_full = Signal()
        rx_active = Signal()

        # payload bytes still to come
        r_left = Signal(range(cfg.max_payload + 1), reset_less=True)
        r_last = Signal(reset_less=True)    # r_left == 1
        len_bad = Signal(reset_less=True)   # registered with the length's high byte
        crc_good = Signal()
        r_crc_ok = Signal(reset_less=True)
        m.d.comb += crc_good.eq(Cat(r_crc_lo, byte) == r_crc)

        # rx.ready: low in CHECK, and in CODE / CRC_HI while the queue is full
        # (conservatively, so ready depends on neither the length nor the CRC)
        m.d.comb += [rx.ready.eq(~s["CHECK"] & ~(s_qwait & q_full)),
                     take.eq(valid & rx.ready),
                     rx_active.eq(~s["HUNT"])]

        with m.If(take):
            m.d.sync += [r_idle.eq(0), r_idle_full.eq(0)]

        # inter-byte timeout: link_timeout_cycles consecutive cycles with no byte
        # offered mid-frame.  Cycles stalled by the link itself do not count.
        # r_idle_full == (r_idle == link_timeout_cycles - 1), kept as a flip-flop
        # so the wide comparison stays off the receiver's state logic
        timeout = Signal()
        m.d.comb += timeout.eq(rx_active & ~valid & r_idle_full)
        with m.If(rx_active & ~valid & ~timeout):
            m.d.sync += [r_idle.eq(r_idle + 1),
                         r_idle_full.eq(r_idle == cfg.link_timeout_cycles - 2)]
        with m.Elif(~valid):
            m.d.sync += [r_idle.eq(0), r_idle_full.eq(0)]
        # a mid-frame state is kept while no byte comes and no timeout
        wait = ~valid & ~r_idle_full

        sync_hit = valid & (byte == LINK.sync_request)
        # `take` in each state, written out with that state's rx.ready (the
        # one-hot code is an invariant synthesis cannot see)
        w_rdy = ~q_full
        code_take = s["CODE"] & valid & w_rdy
        bad_take = s["CODE_BAD"] & valid & w_rdy
        pay_take = s["PAYLOAD"] & valid
        crchi_take = s["CRC_HI"] & valid & w_rdy
        nxt = {
            # (in CHECK the timeout may be pending too: HUNT either way)
            "HUNT": (s["HUNT"] & ~sync_hit) | s["CHECK"] | bad_take | timeout,
            "LEN_LO": (s["HUNT"] & sync_hit) | (s["LEN_LO"] & wait),
            "LEN_HI": (s["LEN_LO"] & valid) | (s["LEN_HI"] & wait),
            "SEQ": (s["LEN_HI"] & valid) | (s["SEQ"] & wait),
            "CODE": (s["SEQ"] & valid & ~len_bad) | (s["CODE"] & ~(valid & w_rdy) & ~timeout),
            "CODE_BAD": ((s["SEQ"] & valid & len_bad) |
                         (s["CODE_BAD"] & ~(valid & w_rdy) & ~timeout)),
            "PAYLOAD": (code_take & ~r_len0) | (s["PAYLOAD"] & ~(valid & r_last) & ~timeout),
            "CRC_LO": (code_take & r_len0) | (pay_take & r_last) | (s["CRC_LO"] & wait),
            "CRC_HI": (s["CRC_LO"] & valid) | (s["CRC_HI"] & ~(valid & w_rdy) & ~timeout),
            "CHECK": crchi_take,
        }
        m.d.sync += [s[n].eq(e) for n, e in nxt.items()]
        m.d.sync += s_qwait.eq(nxt["CODE"] | nxt["CODE_BAD"] | nxt["CRC_HI"])

        # Each register's data is chosen by state flip-flops, not by the
        # handshake, which only reaches the enables.  (In HUNT the CRC starts
        # over in every cycle, so its enable does not wait for the sync byte
        # compare; in LEN_LO, LEN_HI and SEQ rx.ready is high, so a valid
        # byte is taken.)
        with m.If(s["HUNT"] | code_take |
                  (valid & (s["LEN_LO"] | s["LEN_HI"] | s["SEQ"] | s["PAYLOAD"]))):
            m.d.sync += r_crc.eq(Mux(s["HUNT"], LINK.crc_init, crc16_next(r_crc, byte)))
        with m.If(s["LEN_LO"] & valid):
            m.d.sync += r_len[:8].eq(byte)
        with m.If(s["LEN_HI"] & valid):
            m.d.sync += [r_len[8:].eq(byte),
                         r_len0.eq(Cat(r_len[:8], byte) == 0),
                         len_bad.eq(Cat(r_len[:8], byte) > cfg.max_payload)]
        with m.If(s["SEQ"] & valid):
            m.d.sync += r_seq.eq(byte)
        with m.If(code_take):
            m.d.sync += [r_op.eq(byte), r_drop.eq(used == nbuf)]
        with m.If(code_take | pay_take):
            m.d.sync += [r_cnt.eq(Mux(s["CODE"], 0, r_cnt + 1)),
                         r_left.eq(Mux(s["CODE"], r_len, r_left - 1)),
                         r_last.eq(Mux(s["CODE"], r_len == 1, r_left == 2))]
        # A bad length is answered right away (the queue had room, see
        # rx.ready): queued from a flip-flop in the next cycle (nothing else
        # writes the queue in between), so the queue's write does not wait
        # for this byte's handshake.
        with m.If(bad_take):
            m.d.sync += r_badlen.eq(1)
        m.d.comb += [
            wp.addr.eq(Cat(r_cnt[:off_bits], tail[:buf_bits] if nbuf > 1 else Const(0, 1))),
            wp.data.eq(byte),
            wp.en.eq(pay_take & ~r_drop),
        ]
        with m.If(s["CRC_LO"] & valid):
            m.d.sync += r_crc_lo.eq(byte)
        with m.If(crchi_take):
            m.d.sync += r_crc_ok.eq(crc_good)
        with m.If(s["CHECK"]):
            # One cycle for the verdict, so the CRC comparison of the last byte
            # does not drive the buffer bookkeeping in the same cycle.
            with m.If(~r_crc_ok):
                m.d.comb += own_reply(Status.BAD_CRC)
            with m.Elif(r_drop):
                m.d.comb += own_reply(Status.BUSY)
            with m.Else():
                m.d.comb += deliver.eq(1)
                m.d.sync += meta[tail].eq(Cat(r_op, r_seq, r_len))
        with m.If(r_badlen):
            m.d.comb += own_reply(Status.BAD_LENGTH)

        # ---------------- transmitter ---------------------------------------
        # The header bytes (sync, length, sequence number, status) are loaded
        # into a shift register when the reply starts, so the byte sent and
        # the CRC's input are one 2:1 mux (header or reply_data) from flip-flops.
        tx = self.tx
        t = states("tx", ("IDLE", "HDR", "DATA", "CRC_LO", "CRC_HI"), "IDLE")
        t_hdr = Signal(40, reset_less=True)     # header bytes still to send, first in [:8]
        t_hcnt = Signal(5, reset_less=True)     # one-hot: header byte being sent (0 = sync)
        t_len0 = Signal(reset_less=True)        # the reply has no payload
        t_left = Signal(range(cfg.max_payload + 1), reset_less=True)
        t_last = Signal(reset_less=True)        # t_left == 1
        t_crc = Signal(16, reset_less=True)
        t_byte = Signal(8)
        sent = Signal()
        data_byte = self.reply_data.payload
        crc_in = Mux(t["DATA"], data_byte, t_hdr[:8])
        m.d.comb += [
            tx.valid.eq(~t["IDLE"] & ~(t["DATA"] & ~self.reply_data.valid)),
            tx.payload.eq(t_byte),
            sent.eq(tx.valid & tx.ready),
            self.reply_data.ready.eq(t["DATA"] & tx.ready),
        ]
        with m.If(t["CRC_LO"]):
            m.d.comb += t_byte.eq(t_crc[:8])
        with m.Elif(t["CRC_HI"]):
            m.d.comb += t_byte.eq(t_crc[8:])
        with m.Else():
            m.d.comb += t_byte.eq(crc_in)

        t_len = Signal(range(cfg.max_payload + 1))      # the reply's length, truncated
        own_status = Signal(8)
        with m.Switch(q_rdata[:code_bits]):
            for i, st in enumerate(_OWN_STATUSES):
                with m.Case(i):
                    m.d.comb += own_status.eq(st)
        start = Signal()
        t_load = Signal(40)
        with m.If(q_nonempty):
            m.d.comb += t_load.eq(Cat(Const(LINK.sync_reply, 8), Const(0, 16),
                                      q_rdata[code_bits:], own_status))
        with m.Else():
            m.d.comb += [t_len.eq(self.reply.payload.length),
                         t_load.eq(Cat(Const(LINK.sync_reply, 8), t_len,
                                       Const(0, 16 - len(t_len)),
                                       self.reply.payload.seq, self.reply.payload.status))]
        with m.If(t["IDLE"]):
            with m.If(q_nonempty):
                m.d.comb += [q_r.eq(1), start.eq(1)]
            with m.Elif(self.reply.valid):
                m.d.comb += start.eq(1)
        with m.If(start):
            m.d.sync += t_len0.eq(t_len == 0)
        with m.If(start | (t["DATA"] & sent)):
            m.d.sync += [t_left.eq(Mux(start, t_len, t_left - 1)),
                         t_last.eq(Mux(start, t_len == 1, t_left == 2))]

        hdr_end = t["HDR"] & sent & t_hcnt[4]
        data_end = t["DATA"] & sent & t_last
        t_idle_next = (t["IDLE"] & ~start) | (t["CRC_HI"] & sent)
        # reply.ready == IDLE & ~q_nonempty (the reply is taken when the link
        # has none of its own to send), kept as a flip-flop for the consumer
        reply_rdy = Signal()
        m.d.sync += reply_rdy.eq(t_idle_next & ~q_nonempty_next)
        m.d.comb += self.reply.ready.eq(reply_rdy)
        m.d.sync += [
            t["IDLE"].eq(t_idle_next),
            t["HDR"].eq(start | (t["HDR"] & ~(sent & t_hcnt[4]))),
            t["DATA"].eq((hdr_end & ~t_len0) | (t["DATA"] & ~data_end)),
            t["CRC_LO"].eq((hdr_end & t_len0) | data_end | (t["CRC_LO"] & ~sent)),
            t["CRC_HI"].eq((t["CRC_LO"] & sent) | (t["CRC_HI"] & ~sent)),
        ]
        with m.If(start | (t["HDR"] & sent)):
            m.d.sync += t_hcnt.eq(Mux(start, 1, t_hcnt << 1))
        with m.If(start | (t["HDR"] & sent)):
            m.d.sync += t_hdr.eq(Mux(t["IDLE"], t_load, t_hdr[8:]))
        with m.If((t["HDR"] | t["DATA"]) & sent):
            # the sync byte starts the CRC; each later header byte goes into it
            m.d.sync += t_crc.eq(Mux(t["HDR"] & t_hcnt[0], LINK.crc_init,
                                     crc16_next(t_crc, crc_in)))

        m.d.comb += self.busy.eq(rx_active | ~t["IDLE"])
        return m

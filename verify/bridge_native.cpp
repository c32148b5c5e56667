// Native Verilator harness for the hetaccel Device, compiled with the Device's
// Verilog by hetaccel.verify.bridge.build_native: serves the bridge protocol
// (see hetaccel/verify/bridge.py) on the Unix socket named by its one argument,
// one byte per cycle each way, with no Python between cycles.
#include <verilated.h>
#include "Vdev.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <deque>
#include <vector>
#include <string>

static int sock_fd = -1;

#ifdef HETACCEL_SDRAM
// The board's SDRAM as the Device's pins see it: contents and the data bus
// only (the datasheet rules are checked by the cocotb chip model,
// hetaccel/verify/sdram_chip.py, in the device tests).  Same edges as that
// model: a READ sampled at edge N drives beat k for edge N + CL + k; a WRITE
// sampled at edge N takes beat k from dq_o at edge N + k (DQM masks bytes).
// Bursts of 8, sequential, wrapping in their aligned block of 8 columns.
struct Sdram {
    static const int BANKS = 4, ROWS = 8192, COLS = 512;
    std::vector<uint16_t> mem = std::vector<uint16_t>((size_t)BANKS * ROWS * COLS);
    int open_row[BANKS] = {0, 0, 0, 0};
    int cas_latency = 3;
    uint16_t beat[16] = {};
    bool beat_valid[16] = {};
    int w_left = 0, w_bank = 0, w_row = 0, w_col = 0, w_k = 0;
    size_t at(int bank, int row, int col) const {
        return ((size_t)bank * ROWS + row) * COLS + col;
    }
    // dq_i for edge e (what the chip drives before it)
    uint16_t drive(uint64_t e) {
        int i = e & 15;
        uint16_t v = beat_valid[i] ? beat[i] : 0xDEAD;
        beat_valid[i] = false;
        return v;
    }
    // the pins the chip samples at edge e
    void edge(uint64_t e, int cs_n, int ras_n, int cas_n, int we_n, int ba, int a, int dqm,
              uint16_t dq_o, int dq_oe) {
        int cmd = cs_n ? -1 : ras_n << 2 | cas_n << 1 | we_n;
        if (cmd == 0b011) {                         // ACTIVE
            open_row[ba] = a;
        } else if (cmd == 0b101) {                  // READ
            int col = a & (COLS - 1);
            for (int k = 0; k < 8; k++) {
                int c = (col & ~7) | ((col + k) & 7);
                int i = (e + cas_latency + k) & 15;
                beat[i] = mem[at(ba, open_row[ba], c)];
                beat_valid[i] = true;
            }
        } else if (cmd == 0b100) {                  // WRITE: its beat 0 is at this edge
            w_bank = ba; w_row = open_row[ba]; w_col = a & (COLS - 1); w_k = 0; w_left = 8;
        } else if (cmd == 0b000) {                  // LOAD MODE
            cas_latency = (a >> 4) & 7;
        }
        if (w_left) {
            int col = (w_col & ~7) | ((w_col + w_k) & 7);
            uint16_t& w = mem[at(w_bank, w_row, col)];
            if (dq_oe) {
                if (!(dqm & 1)) w = (w & 0xFF00) | (dq_o & 0x00FF);
                if (!(dqm & 2)) w = (w & 0x00FF) | (dq_o & 0xFF00);
            }
            w_k++; w_left--;
        }
    }
};
#endif

static bool read_exact(void* buf, size_t n) {
    uint8_t* p = (uint8_t*)buf;
    while (n) {
        ssize_t r = read(sock_fd, p, n);
        if (r <= 0) return false;
        p += r; n -= r;
    }
    return true;
}
static bool write_all(const void* buf, size_t n) {
    const uint8_t* p = (const uint8_t*)buf;
    while (n) {
        ssize_t r = write(sock_fd, p, n);
        if (r <= 0) return false;
        p += r; n -= r;
    }
    return true;
}

int main(int argc, char** argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s SOCKET\n", argv[0]); return 2; }
    Verilated::commandArgs(argc, argv);
    Vdev* top = new Vdev;
    sock_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr; memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, argv[1], sizeof(addr.sun_path) - 1);
    if (connect(sock_fd, (struct sockaddr*)&addr, sizeof addr) != 0) { perror("connect"); return 1; }

    uint64_t cycles = 0;
    std::vector<uint8_t> rx; size_t rx_pos = 0;
    std::vector<uint8_t> out;
    // reply-frame counter over the device's output (always well formed)
    std::vector<uint8_t> fbuf; uint64_t frames = 0;

#ifdef HETACCEL_SDRAM
    Sdram* sdram = new Sdram;
#endif
    // a request byte is offered at most every byte_cycles cycles (1: as fast
    // as the device takes them; a UART's 10 bits at its baud: a board's pace)
    uint64_t byte_cycles = 1, next_byte = 0;
    auto tick = [&](bool feed) {
        // inputs for this cycle; outputs settle at clk low
        bool have = feed && rx_pos < rx.size() && cycles >= next_byte;
        top->rx_valid = have;
        top->rx_data = have ? rx[rx_pos] : 0;
        top->tx_ready = 1;
#ifdef HETACCEL_SDRAM
        top->sdram_dq_i = sdram->drive(cycles);
#endif
        top->clk = 0; top->eval();
#ifdef HETACCEL_SDRAM
        sdram->edge(cycles, top->sdram_cs_n, top->sdram_ras_n, top->sdram_cas_n,
                    top->sdram_we_n, top->sdram_ba, top->sdram_a, top->sdram_dqm,
                    top->sdram_dq_o, top->sdram_dq_oe);
#endif
        bool take = have && top->rx_ready;
        bool give = top->tx_valid;
        uint8_t byte = top->tx_data;
        top->clk = 1; top->eval();
        cycles++;
        if (take) { rx_pos++; next_byte = cycles - 1 + byte_cycles; }
        if (give) { out.push_back(byte); fbuf.push_back(byte); }
    };
    auto count_frames = [&]() {
        size_t pos = 0;
        while (true) {
            while (pos < fbuf.size() && fbuf[pos] != 0x5A) pos++;
            if (fbuf.size() - pos < 3) break;
            size_t total = 7 + (fbuf[pos + 1] | (fbuf[pos + 2] << 8));
            if (fbuf.size() - pos < total) break;
            frames++; pos += total;
        }
        fbuf.erase(fbuf.begin(), fbuf.begin() + pos);
    };
    auto reset = [&](int n) {
        top->rst = 1;
        for (int i = 0; i < n; i++) tick(false);
        top->rst = 0;
    };
    reset(4);

    while (true) {
        uint8_t hdr[5];
        if (!read_exact(hdr, 5)) break;
        uint32_t n = hdr[1] | hdr[2] << 8 | hdr[3] << 16 | (uint32_t)hdr[4] << 24;
        std::vector<uint8_t> body(n);
        if (n && !read_exact(body.data(), n)) break;
        char cmd = (char)hdr[0];
        if (cmd == 'D') {
            if (rx_pos > (1u << 16)) { rx.erase(rx.begin(), rx.begin() + rx_pos); rx_pos = 0; }
            rx.insert(rx.end(), body.begin(), body.end());
        } else if (cmd == 'R') {
            uint64_t max_cycles; uint32_t want;
            memcpy(&max_cycles, body.data(), 8); memcpy(&want, body.data() + 8, 4);
            uint64_t deadline = cycles + max_cycles, target = frames + want;
            size_t last_out = 0;
            while (cycles < deadline) {
                tick(true);
                if (out.size() != last_out) { last_out = out.size(); count_frames(); if (frames >= target) break; }
            }
            std::vector<uint8_t> msg(5 + 8 + out.size());
            uint32_t len = 8 + out.size();
            msg[0] = 'T'; memcpy(&msg[1], &len, 4); memcpy(&msg[5], &cycles, 8);
            if (!out.empty()) memcpy(&msg[13], out.data(), out.size());
            out.clear();
            if (!write_all(msg.data(), msg.size())) break;
        } else if (cmd == 'P') {
            uint32_t n; memcpy(&n, body.data(), 4);
            byte_cycles = n ? n : 1;
        } else if (cmd == 'X') {
            reset(4);
            rx.clear(); rx_pos = 0;
        } else if (cmd == 'Q') {
            break;
        } else {
            fprintf(stderr, "unknown bridge command %c\n", cmd); return 1;
        }
    }
    top->final();
    delete top;
    return 0;
}

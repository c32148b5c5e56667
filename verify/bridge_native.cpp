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

    auto tick = [&](bool feed) {
        // inputs for this cycle; outputs settle at clk low
        bool have = feed && rx_pos < rx.size();
        top->rx_valid = have;
        top->rx_data = have ? rx[rx_pos] : 0;
        top->tx_ready = 1;
        top->clk = 0; top->eval();
        bool take = have && top->rx_ready;
        bool give = top->tx_valid;
        uint8_t byte = top->tx_data;
        top->clk = 1; top->eval();
        cycles++;
        if (take) rx_pos++;
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

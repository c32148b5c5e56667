// Top of the native harness (bridge_native.cpp) for a Device with an SDRAM:
// the byte streams and the chip's pins as plain ports, under the names the C++
// side drives (its SDRAM model answers on sdram_dq_i).
module native_top(input clk, input rst, input rx_valid, input [7:0] rx_data, output rx_ready,
                  output tx_valid, output [7:0] tx_data, input tx_ready,
                  output sdram_cs_n, output sdram_ras_n, output sdram_cas_n, output sdram_we_n,
                  output [1:0] sdram_ba, output [12:0] sdram_a, output [1:0] sdram_dqm,
                  output [15:0] sdram_dq_o, output sdram_dq_oe, input [15:0] sdram_dq_i);
  wire unused_cke;
  hetaccel_native_device dev(.clk(clk), .rst(rst), .rx__valid(rx_valid), .rx__payload(rx_data),
    .rx__ready(rx_ready), .tx__valid(tx_valid), .tx__payload(tx_data), .tx__ready(tx_ready),
    .sdram__cke(unused_cke), .sdram__cs_n(sdram_cs_n), .sdram__ras_n(sdram_ras_n),
    .sdram__cas_n(sdram_cas_n), .sdram__we_n(sdram_we_n), .sdram__ba(sdram_ba),
    .sdram__a(sdram_a), .sdram__dqm(sdram_dqm), .sdram__dq_o(sdram_dq_o),
    .sdram__dq_oe(sdram_dq_oe), .sdram__dq_i(sdram_dq_i));
endmodule

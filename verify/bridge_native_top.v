// Top of the native harness (bridge_native.cpp): the Device's streams as plain
// ports, under the names the C++ side drives.
module native_top(input clk, input rst, input rx_valid, input [7:0] rx_data, output rx_ready,
                  output tx_valid, output [7:0] tx_data, input tx_ready);
  hetaccel_native_device dev(.clk(clk), .rst(rst), .rx__valid(rx_valid), .rx__payload(rx_data),
    .rx__ready(rx_ready), .tx__valid(tx_valid), .tx__payload(tx_data), .tx__ready(tx_ready));
endmodule

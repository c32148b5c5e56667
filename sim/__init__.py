"""Bit-exact NumPy models, Verilog export and the cocotb harness."""

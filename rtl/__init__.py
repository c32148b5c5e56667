"""Amaranth generators of the accelerator blocks and the device."""

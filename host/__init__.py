"""The host runtime: one Python API over the emulator, the RTL simulation and boards."""

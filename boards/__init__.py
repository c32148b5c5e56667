"""FPGA board builds (iCEBreaker, ULX3S) and the ASIC-style synthesis report."""

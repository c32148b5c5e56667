"""The contract: everything the generators, the models and the runtime must agree on.

Every other room imports from here and nothing here imports the project's
other rooms or Amaranth (NumPy only), so the runtime and the models can load
the contract on a host with no HDL tools.  An accelerator instance is one
:class:`AcceleratorConfig`: nothing else hard-codes an array shape, a width, a
memory size, an opcode or a register address, and a config is validated when
it is built, so an impossible accelerator is refused with a :class:`ValueError`
naming the field and its allowed range instead of being generated and
silently wrapping.

- :mod:`.config` -- :class:`AcceleratorConfig`, the default instance;
- :mod:`.codes` -- opcodes, memory spaces and status codes;
- :mod:`.isa` -- instruction layouts and checks, memory word formats, the
  register map and identity words (docs/isa.md is generated from it);
- :mod:`.formats` -- the activation and Adam units' number formats and
  hyperparameter registers;
- :mod:`.pwl` -- the 16-bit activations' piecewise-linear segments and ROM;
- :mod:`.link` -- host-link framing and CRC;
- :mod:`.timing` -- every unit's pipeline timing, which the RTL checks when
  it is elaborated and the device model and planner count with;
- :mod:`.boards` -- the board catalog (imported on its own, as
  ``hetaccel.spec.boards``).

The names of config, codes, isa, formats and pwl are re-exported here, as is
:class:`~.link.LinkFormat`; link and timing are used as modules.
"""

from __future__ import annotations

from . import codes, config, device_memory, formats, isa, link, pwl, timing
from .codes import MemSpace, Opcode, Status
from .config import DEFAULT_CONFIG, MAC_MAPPINGS, AcceleratorConfig, min_acc_bits
from .formats import (ACTIVATION_FORMAT, ADAM_HYPERPARAMETERS, INT32_MAX, INT32_MIN,
                      MULTIPLIER_MAX, SHIFT_MAX, ActivationFormat, ActivationFunction,
                      ActivationPrecision, AdamMode)
from .isa import (ACT_PRECISION_MASK, ACT_TABLE_SHIFT, COUNTERS, DEVICE_MAGIC, GEMM_ACCUMULATE,
                  MEMORY_COUNTERS, dma_spaces,
                  IDENTITY_FIELDS, INSTRUCTIONS, ISA_VERSION, InstructionFormat, Register,
                  WordFormat, activate_flags, activation_function_valid, check_instruction,
                  config_from_identity, decode_instruction, encode_instruction, identity_words,
                  isa_markdown, mem_depth, mem_present, mem_readable, mem_word, opcode_present,
                  pack_words, register_map, unpack_words, validate_instruction)
from .link import LinkFormat
from .pwl import (PWL_BANKS, PWL_C0_BITS, PWL_C1_BITS, PWL_FRAC, PWL_SEGMENT_BITS, PWL_SEGMENTS,
                  PWL_SLOPE_FRAC, pwl_rom, pwl_rom_words, pwl_segment)

__all__ = [
    # modules
    "codes", "config", "device_memory", "formats", "isa", "link", "pwl", "timing",
    # codes
    "MemSpace", "Opcode", "Status",
    # config
    "DEFAULT_CONFIG", "MAC_MAPPINGS", "AcceleratorConfig", "min_acc_bits",
    # formats
    "ACTIVATION_FORMAT", "ADAM_HYPERPARAMETERS", "INT32_MAX", "INT32_MIN", "MULTIPLIER_MAX",
    "SHIFT_MAX", "ActivationFormat", "ActivationFunction", "ActivationPrecision", "AdamMode",
    # isa
    "ACT_PRECISION_MASK", "ACT_TABLE_SHIFT", "COUNTERS", "DEVICE_MAGIC", "GEMM_ACCUMULATE",
    "MEMORY_COUNTERS", "dma_spaces",
    "IDENTITY_FIELDS", "INSTRUCTIONS", "ISA_VERSION", "InstructionFormat", "Register",
    "WordFormat", "activate_flags", "activation_function_valid", "check_instruction",
    "config_from_identity", "decode_instruction", "encode_instruction", "identity_words",
    "isa_markdown", "mem_depth", "mem_present", "mem_readable", "mem_word", "opcode_present",
    "pack_words", "register_map", "unpack_words", "validate_instruction",
    # link
    "LinkFormat",
    # pwl
    "PWL_BANKS", "PWL_C0_BITS", "PWL_C1_BITS", "PWL_FRAC", "PWL_SEGMENT_BITS", "PWL_SEGMENTS",
    "PWL_SLOPE_FRAC", "pwl_rom", "pwl_rom_words", "pwl_segment",
]

"""The one source of truth for an accelerator instance.

Every parameter the RTL generator, the bit-exact model and the host runtime need
lives in :class:`AcceleratorConfig`.  Nothing else in the project hard-codes an
array shape, a width, a memory size, an opcode or a register address: it asks the
config.  A config is validated when it is built, so an impossible accelerator is
rejected with a :class:`ValueError` that names the field and the allowed range
instead of being generated and silently wrapping.
"""

from __future__ import annotations

from . import codes, config, formats, isa, link, pwl, timing
from .codes import *  # noqa: F401,F403
from .config import *  # noqa: F401,F403
from .formats import *  # noqa: F401,F403
from .isa import *  # noqa: F401,F403
from .pwl import *  # noqa: F401,F403
from .link import LinkFormat

__all__ = [*codes.__all__, *config.__all__, *formats.__all__, *isa.__all__, *pwl.__all__,
           "LinkFormat", "codes", "config", "formats", "isa", "link", "pwl", "timing"]

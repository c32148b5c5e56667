"""``hetaccel run``: models on the accelerator (see :mod:`hetaccel.cli.commands`)."""

from .commands import RUN_HELP as HELP
from .commands import run_add_arguments as add_arguments
from .commands import run_run as run

__all__ = ["HELP", "add_arguments", "run"]

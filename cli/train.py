"""``hetaccel train``: training on the accelerator (see :mod:`hetaccel.cli.commands`)."""

from .commands import TRAIN_HELP as HELP
from .commands import train_add_arguments as add_arguments
from .commands import train_run as run

__all__ = ["HELP", "add_arguments", "run"]

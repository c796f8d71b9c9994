"""The `prakerja` command (`cli:main`): its root group and every command group, one
module each. `python -m cli` runs it too."""

from cli import (  # noqa: F401 - registers the commands
    approve,
    db,
    demo,
    ops,
    payout,
    portal,
    simulator,
    wave,
)
from cli.root import (
    EXIT_BUSY,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_REFUSED,
    EXIT_SIGN_OFF,
    main,
)
from cli.wave import _print_funnel, run_wave_command

__all__ = [
    "EXIT_BUSY",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_PENDING",
    "EXIT_REFUSED",
    "EXIT_SIGN_OFF",
    "_print_funnel",
    "main",
    "run_wave_command",
]

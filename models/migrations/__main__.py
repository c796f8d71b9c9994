"""Alembic's command line on the program's migrations and PRAKERJA_DATABASE_URL, no ini file:

python -m models.migrations revision --autogenerate -m "sign-off table"
python -m models.migrations history
"""

import sys

from alembic.config import CommandLine

from models.config import read_settings
from models.schema import alembic_config


def main(argv: list[str] | None = None) -> None:
    cli = CommandLine(prog="python -m models.migrations")
    options = cli.parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    # Its settings, read once as it starts: the program database of PRAKERJA_DATABASE_URL.
    cli.run_cmd(alembic_config(url=read_settings().database_url), options)


if __name__ == "__main__":
    main()

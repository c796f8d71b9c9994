"""`python -m cli`: the `prakerja` command."""

from cli import main

main()

"""Command line: `python -m partners.simulator --port 8900 --seed demo [--faults faults.toml]`."""

import argparse
import sys

from partners.simulator.server import CannotListen, admin_token_from_env, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m partners.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--seed", required=True, help="the truth seed (same as the export's)")
    parser.add_argument("--faults", default=None, help="a faults TOML file")
    parser.add_argument("--state", default=None, help="JSON-lines issuer and notifier state")
    parser.add_argument(
        "--lives",
        choices=("seeded", "none"),
        default="seeded",
        help="seeded: each credited card gets training events drawn from the seed; "
        "none: only the events scripted by POST /_admin/training/events",
    )
    args = parser.parse_args(argv)
    try:
        token = admin_token_from_env()
    except ValueError as exc:
        parser.error(str(exc))
    try:
        serve(
            args.host,
            args.port,
            args.seed,
            args.faults,
            state_path=args.state,
            admin_token=token,
            lives=args.lives,
        )
    except CannotListen as exc:
        print(f"error: the partner simulator {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

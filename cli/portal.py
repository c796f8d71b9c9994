"""`prakerja portal`: serves the registrant dashboard (portal.md)."""

from __future__ import annotations

import sys

import click

from cli.root import (
    EXIT_ERROR,
    _load_partners,
    _refuse,
    main,
    settings,
)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8780, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--proxy-headers",
    is_flag=True,
    help="Trust X-Forwarded-Proto/-For from --forwarded-allow-ips (TLS ends at a proxy).",
)
@click.option(
    "--forwarded-allow-ips",
    metavar="IPS",
    help="The proxies' addresses, comma-separated (uvicorn's; default its own: "
    "$FORWARDED_ALLOW_IPS, else 127.0.0.1,::1).",
)
@click.option(
    "--insecure-cookie",
    is_flag=True,
    help="No Secure on the session cookie over plain HTTP (https requests keep it).",
)
def portal(
    host: str,
    port: int,
    workers: int,
    proxy_headers: bool,
    forwarded_allow_ips: str | None,
    insecure_cookie: bool,
) -> None:
    """Serves the registrant dashboard (portal.md) over the program database."""
    from functools import partial

    import uvicorn

    from partners.config import ConfigError
    from portal.app import create_app
    from portal.settings import MIN_SECRET, SECRET_ENV, is_loopback

    if forwarded_allow_ips is not None and not proxy_headers:
        _refuse("--forwarded-allow-ips is only read with --proxy-headers")
    loopback = is_loopback(host)
    given = settings().portal_secret
    secret = given.get_secret_value() if given else None
    if secret is not None and len(secret) < MIN_SECRET:
        _refuse(f"{SECRET_ENV} must be at least {MIN_SECRET} characters")
    if secret is None and not loopback:
        _refuse(
            f"{SECRET_ENV} is not set: it is required when --host is not a loopback "
            f"address (at least {MIN_SECRET} characters, the same for every portal process)"
        )
    # On loopback without proxy headers the browser is on this machine, over plain HTTP:
    # a Secure cookie would never come back. Anywhere else it is Secure unless the
    # operator says otherwise; a request that came over https gets it whatever this says.
    secure_cookie = not insecure_cookie and (proxy_headers or not loopback)
    # The dashboard's settings, handed to each of its worker processes with the app's
    # factory (pickled by uvicorn when it starts them), not through the environment.
    # Without the variable, every worker reads the secret kept in the program database.
    served = settings().model_copy(update={"portal_secure_cookie": secure_cookie})
    try:
        _load_partners()  # the notifier sends the codes: refuse a bad file now
    except ConfigError as exc:
        _refuse(str(exc))
    from models.schema import SchemaError

    try:
        from models.db import init_db
        from portal.store import make_portal_engine, stored_secret

        # Its tables, and reachable; the kept secret made now, before the workers start.
        engine = make_portal_engine(served.database_url, served)
        try:
            init_db(engine)
            if secret is None:
                stored_secret(engine)
        finally:
            engine.dispose()
    except SchemaError as exc:
        _refuse(str(exc))
    except Exception as exc:
        _refuse(f"the program database cannot be opened: {type(exc).__name__}")
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"dashboard on http://{shown}:{port}/ ({workers} worker{'s' * (workers > 1)}); "
        "stop with Ctrl-C",
        err=True,
    )
    serve_portal(
        uvicorn.Config(
            partial(create_app, served),
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=proxy_headers,
            forwarded_allow_ips=forwarded_allow_ips,
        )
    )


def serve_portal(config) -> None:
    """uvicorn.run, with TCP_NODELAY on the listening socket (accepted sockets inherit it).

    uvicorn binds the socket with protocol 0, and asyncio then leaves Nagle's algorithm on
    for every connection: each answer's body waited ~40 ms for the client's delayed ACK,
    which capped the dashboard at ~1,400 reads/s on 2 cores with the CPU half idle
    (bench/portal_load.py). uvloop, when installed, sets it too; this does not rely on it.
    """
    import socket

    from uvicorn.server import Server
    from uvicorn.supervisors import Multiprocess

    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server = Server(config=config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    if config.workers == 1 and not server.started:
        sys.exit(EXIT_ERROR)

"""The portal's settings (models/config.py), read once from the environment
(portal.md, "Serving it").

`prakerja portal` checks them before it starts; with `--workers N` each worker process
reads the same variables (uvicorn starts workers from an import string, so the
environment is how the parent hands them over: the secret it made on loopback included).
"""

from __future__ import annotations

import ipaddress

from models.config import Settings

MIN_SECRET = 32
SECRET_ENV = "PRAKERJA_PORTAL_SECRET"
# The portal reads the program's one settings model (database_url, partners, portal_*).
PortalSettings = Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

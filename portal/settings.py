"""The portal's settings, read once from the environment (portal.md, "Serving it").

`prakerja portal` checks them before it starts; with `--workers N` each worker process
reads the same variables (uvicorn starts workers from an import string, so the
environment is how the parent hands them over: the secret it made on loopback included).
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.db import DEFAULT_DATABASE_URL

MIN_SECRET = 32
SECRET_ENV = "PRAKERJA_PORTAL_SECRET"


class PortalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRAKERJA_", extra="ignore")

    database_url: str = Field(DEFAULT_DATABASE_URL, description="the program database")
    partners: str | None = Field(None, description="partners TOML; its notifier sends codes")
    portal_secret: SecretStr | None = Field(
        None, description=f"keys the hashes of NIKs and codes; at least {MIN_SECRET} characters"
    )
    portal_secure_cookie: bool = Field(
        True, description="mark the session cookie Secure (off only when served on loopback)"
    )
    portal_code_window_ms: int = Field(
        50, ge=1, le=1000, description="how long codes are collected into one gateway call"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

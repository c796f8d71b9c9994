"""The drop folder: where the weekly wave finds the export of the wave that is due.

Convention (docs/operations.md):

    $PRAKERJA_DROP_DIR/            default ./var/drop (relative to the working directory)
        wave-<N>.csv               the registrant export of wave N (registrant-file.md)
        wave-<N>.toml              its settings: quota (required) and any wave setting

The due wave is the lowest N that has a `wave-<N>.csv` and no wave row yet. Write the
CSV under another name (e.g. `wave-<N>.csv.part`) and rename it when complete, and drop the
TOML first: the weekly run takes the CSV as soon as it sees it. The lottery seed is never
in the folder: the weekly run draws a fresh one and publishes its SHA-256 before the draw.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.config import Settings
from rules.settings import SettingsError, check_setting

_EXPORT = re.compile(r"wave-([1-9][0-9]{0,8})\.csv")


@dataclass(frozen=True)
class DueWave:
    wave_id: int
    export: Path
    settings_file: Path


def drop_dir(settings: Settings) -> Path:
    return Path(settings.drop_dir)


def exports_in(folder: Path) -> dict[int, Path]:
    """wave number -> export file, for every `wave-<N>.csv` in the folder."""
    if not folder.is_dir():
        return {}
    found: dict[int, Path] = {}
    for entry in folder.iterdir():
        m = _EXPORT.fullmatch(entry.name)
        if m and entry.is_file():
            found[int(m.group(1))] = entry
    return found


def due_wave(folder: Path, existing: Iterable[int]) -> DueWave | None:
    """The lowest wave with an export and no wave row yet, or None."""
    have = set(existing)
    for n, export in sorted(exports_in(folder).items()):
        if n not in have:
            return DueWave(n, export, folder / f"wave-{n}.toml")
    return None


def read_wave_settings(path: Path) -> dict[str, Any]:
    """The settings TOML of a dropped wave (any wave setting but the wave number and the
    seed); unknown keys, wrong types and values out of bounds are refused."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(
            f"{path.name}: missing; the drop folder needs the wave's settings (at least quota)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path.name}: malformed TOML: {exc}") from None
    for key, value in data.items():
        if key in ("lottery_seed", "wave_id"):
            why = (
                "the weekly wave draws a fresh seed and publishes its SHA-256 before the draw"
                if key == "lottery_seed"
                else "the wave's number is in the file name"
            )
            raise SettingsError(f"{path.name}: {key}: not accepted here; {why}")
        try:
            check_setting(key, value)  # the type and bounds of rules.settings.WaveSettings
        except SettingsError as exc:
            raise SettingsError(f"{path.name}: {exc}") from None
    if "quota" not in data:
        raise SettingsError(f"{path.name}: quota: required")
    return dict(data)

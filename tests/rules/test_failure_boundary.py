"""The task boundary (runtime/boundary.py) and the log masking (runtime/log_masking.py): what a
failure leaves behind holds no personal data, without running Prefect."""

from __future__ import annotations

import io
import logging
import pickle
import sqlite3
import traceback

import pytest
from sqlalchemy.exc import OperationalError

ROW = ("3171010101800001", "Budi Santoso", "budi.santoso@gmail.com", "+6281234567890")


def _db_error() -> OperationalError:
    try:
        raise sqlite3.OperationalError("database is locked")
    except sqlite3.OperationalError as orig:
        return OperationalError("INSERT INTO registrant VALUES (?, ?, ?, ?)", [ROW], orig)


def test_an_exception_leaving_a_task_is_cleaned_without_its_chain():
    from runtime.boundary import CleanedError, clean_failures

    @clean_failures
    def intake(wave_id: int) -> None:
        try:
            raise _db_error()
        except OperationalError as exc:
            raise RuntimeError(f"intake of wave {wave_id} failed: {exc}") from exc

    with pytest.raises(CleanedError) as info:
        intake(1)
    exc = info.value
    shown = (
        "".join(traceback.format_exception(exc)) + repr(exc) + str(pickle.loads(pickle.dumps(exc)))
    )
    assert exc.__cause__ is None and exc.__context__ is None
    assert "RuntimeError" in shown and "database is locked" in shown
    for value in ROW:
        assert value not in shown


def test_prefect_exceptions_and_cleaned_errors_pass_as_they_are():
    from prefect.exceptions import UpstreamTaskError

    from runtime.boundary import CleanedError, clean_failures

    upstream, cleaned = UpstreamTaskError("upstream failed"), CleanedError("X: y", "X")

    @clean_failures
    def raises(exc):
        raise exc

    for exc in (upstream, cleaned):
        with pytest.raises(type(exc)) as info:
            raises(exc)
        assert info.value is exc


def test_every_prefect_task_and_flow_of_the_project_is_cleaned():
    """Declared with runtime.boundary's `task` and `flow`, not Prefect's own."""
    import importlib
    import pkgutil
    from pathlib import Path

    from prefect import Flow, Task

    from runtime.boundary import CLEANED_ATTR

    root = Path(__file__).resolve().parents[2]
    modules = [
        importlib.import_module(f"{package}.{info.name}")
        for package in ("flows", "tasks", "deployments")
        for info in pkgutil.iter_modules([str(root / package)])
    ]
    declared = [
        (module.__name__, name, obj)
        for module in modules
        for name, obj in vars(module).items()
        if isinstance(obj, Task | Flow) and getattr(obj.fn, "__module__", "") == module.__name__
    ]
    assert len(declared) > 25
    assert not [(m, n) for m, n, obj in declared if not getattr(obj.fn, CLEANED_ATTR, False)]


def test_the_log_filter_masks_tracebacks_too():
    from runtime.log_masking import MaskingFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskingFilter())
    logger = logging.getLogger("prakerja.test-failure-boundary")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(f"row {ROW!r}")
        except ValueError:
            logger.error("Task run failed with exception: %s", "+6281234567890", exc_info=True)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "Traceback" in text and "ValueError" in text
    for value in ("3171010101800001", "budi.santoso@gmail.com", "+6281234567890"):
        assert value not in text

"""The boundary between the project's code and Prefect: no personal data crosses it in a
failure.

Prefect turns an exception that leaves a task or flow into the run's state message
(`Task run encountered an exception <Type>: <message>`), logs it with its traceback (the
whole chain of causes), persists it as the run's result when results are persisted, and
re-raises it in the calling flow, whose own failure does the same again. A database
error's text holds its SQL parameters or PostgreSQL's DETAIL: rows of NIKs, names,
emails, phones and accounts. So every task and flow of the project is declared with the
`task` and `flow` of this module, drop-in replacements for Prefect's: an exception
leaving the function is replaced by a `CleanedError` whose message is
`rules.masking.error_text` of it, raised without its cause or context, so that neither
the message, the traceback, nor the pickled exception holds what the original held.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from prefect import flow as prefect_flow
from prefect import task as prefect_task

from rules.masking import error_text

CLEANED_ATTR = "__prakerja_cleaned__"


class CleanedError(RuntimeError):
    """An exception that left a task or flow, with personal data taken out: its message
    is `<original type>: <message>` (rules.masking.error_text)."""

    already_cleaned = True  # rules.masking.error_text prints it as it is

    def __init__(self, message: str, original_type: str = "") -> None:
        super().__init__(message)
        self.original_type = original_type

    def __reduce__(self):  # pickles (results, worker processes) as it was built
        return (type(self), (str(self), self.original_type))


def _passes_through(exc: BaseException) -> bool:
    """Prefect's own exceptions (an upstream task that failed, a timeout, a run that
    failed: their text is Prefect's, or an already cleaned state message) must reach the
    engine as they are, which tells them apart by type; a cleaned error is not cleaned
    twice."""
    if isinstance(exc, CleanedError):
        return True
    module = type(exc).__module__ or ""
    return module == "prefect" or module.startswith("prefect.")


def cleaned(exc: BaseException) -> BaseException:
    """`exc` if it may cross the boundary as it is, else its CleanedError."""
    if _passes_through(exc):
        return exc
    return CleanedError(error_text(exc), type(exc).__name__)


def _same_face(wrapper: Callable[..., Any], fn: Callable[..., Any]) -> Callable[..., Any]:
    """`wrapper` with `fn`'s name, doc and signature, its annotations resolved: Prefect
    validates parameters with pydantic, which reads string annotations (`from __future__
    import annotations`) in the wrapper's module, not `fn`'s."""
    functools.update_wrapper(wrapper, fn)
    try:
        wrapper.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a hint that cannot be resolved stays a string
        pass
    return wrapper


def clean_failures(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, raising CleanedError (without cause or context) instead of what it raised."""
    if getattr(fn, CLEANED_ATTR, False):
        return fn

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - replaced, not swallowed
            failure = cleaned(exc)
            if failure is exc:
                raise
        # Raised outside the except block: no __context__ to carry the original along.
        failure.__traceback__ = None
        raise failure from None

    _same_face(wrapper, fn)
    setattr(wrapper, CLEANED_ATTR, True)
    # Prefect's task key and cache key then hash `fn`'s code, not this wrapper's.
    wrapper.__prefect_task_source__ = fn  # type: ignore[attr-defined]
    return wrapper


def task(__fn: Callable[..., Any] | None = None, **options: Any):
    """`prefect.task`, with failures cleaned (use as `@task` or `@task(name=...)`)."""
    if __fn is not None:
        return prefect_task(clean_failures(__fn), **options)
    return lambda fn: prefect_task(clean_failures(fn), **options)


def _masked_logging(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, with the log masking (runtime.log_masking) on every handler when it starts: Prefect
    may have configured its handlers after the process installed it."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from runtime.log_masking import install_masking

        install_masking()
        return fn(*args, **kwargs)

    return _same_face(wrapper, fn)


def _flow(fn: Callable[..., Any], options: dict[str, Any]):
    if "version" not in options:
        # Prefect's default, a hash of the flow's file: of `fn`'s, not of this module.
        try:
            from prefect.utilities.hashing import file_hash

            options = {**options, "version": file_hash(inspect.getsourcefile(fn) or "")}
        except (OSError, TypeError):
            pass
    return prefect_flow(clean_failures(_masked_logging(fn)), **options)


def flow(__fn: Callable[..., Any] | None = None, **options: Any):
    """`prefect.flow`, with failures cleaned and logs masked (use as `@flow` or
    `@flow(name=...)`)."""
    if __fn is not None:
        return _flow(__fn, options)
    return lambda fn: _flow(fn, options)

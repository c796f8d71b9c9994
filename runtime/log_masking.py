"""Masks personal data in every log record before it reaches a console or the Prefect API:
its message, and its traceback (an exception's text can hold what its SQL was given).
Also keeps out of the terminal the run-log warnings its stage lines already say."""

import logging

from rules.masking import mask_text

_FORMATTER = logging.Formatter()


class MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info:
            # Formatted and masked once here; handlers print exc_text when exc_info is unset
            # (logging.Formatter.format), so no handler formats the raw exception again.
            if not record.exc_text:
                record.exc_text = _FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


# A run-log record with `extra={SHOWN_BY_STAGE_LINE: True}` says what the stage's progress
# line (cli/stage_lines.py) already says in the terminal: it goes to the Prefect API as
# any other, and to the terminal only with -v (there the root logger shows INFO).
SHOWN_BY_STAGE_LINE = "prakerja_shown_by_stage_line"


class StageLineEcho(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, SHOWN_BY_STAGE_LINE, False):
            return True
        return logging.getLogger().getEffectiveLevel() <= logging.INFO


_FILTER = MaskingFilter()
_ECHO = StageLineEcho()
_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs", "prakerja", "prakerja.partners")


def install_masking() -> None:
    """Filters on the loggers our code and Prefect's run loggers use, and on every handler
    of the root logger and of Prefect's loggers (console and API): a record propagated
    from another logger is masked by the handler's filter. The console also leaves out
    what a stage line already says (StageLineEcho)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    loggers = [logging.getLogger()] + [
        logger
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and (name == "prefect" or name.startswith("prefect."))
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    # The terminal (the root logger's console handler), not the API's handler.
    for handler in logging.getLogger().handlers:
        if (
            isinstance(handler, logging.StreamHandler)
            and not isinstance(handler, logging.FileHandler)
            and _ECHO not in handler.filters
        ):
            handler.addFilter(_ECHO)

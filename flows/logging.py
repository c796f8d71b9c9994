"""Masks personal data in every log record before it reaches a console or the Prefect API."""

import logging

from rules.masking import mask_text


class MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_FILTER = MaskingFilter()
_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs", "prakerja", "prakerja.partners")


def install_masking() -> None:
    """Filters on the loggers our code and Prefect's run loggers use, and on root handlers."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)

"""Keep request bytes out of the logs.

aiohttp logs a request it cannot parse with the exception, and the exception quotes the
offending bytes: a header too long or malformed may well be ``Authorization: Bearer sk-…``.
The filter keeps the line and the reason, and drops the quoted bytes.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["install_log_redaction"]


class _ParseErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            message = record.getMessage()
            record.msg = "%s: %s %s (request bytes not logged)"
            record.args = (message, exc.code, type(exc).__name__)
            record.exc_info = None
            record.exc_text = None
        return True


def install_log_redaction() -> None:
    """Attach the filter to aiohttp's server logger (once; called by ``serve`` at start-up)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _ParseErrorFilter) for f in logger.filters):
        logger.addFilter(_ParseErrorFilter())

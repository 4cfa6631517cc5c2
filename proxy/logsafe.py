"""Keep credentials out of the logs.

aiohttp logs a request it cannot parse with the exception, and the exception quotes the
offending bytes: a header too long or malformed may well be ``Authorization: Bearer sk-…``.
That filter keeps the line and the reason, and drops the quoted bytes. The access log's
request line keeps its query, less the values of parameters named like credentials.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

from proxy.credentials import redact_query

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


class _QueryFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_query(record.getMessage())
        record.args = None
        return True


def install_log_redaction(access_logger: logging.Logger) -> None:
    """Attach the filters to aiohttp's server logger and the access logger (once; ``serve`` calls it)."""
    for logger, kind in ((logging.getLogger("aiohttp.server"), _ParseErrorFilter), (access_logger, _QueryFilter)):
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())

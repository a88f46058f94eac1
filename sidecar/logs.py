"""Structured JSON logs that never carry inspected content.

Log calls pass facts as `extra={...}` (request id, policy, decision, counts, timings);
the formatter emits one JSON object per line. Exceptions are logged with `error_frames`,
which keeps the stack but drops the message, because exception messages from NLP
libraries can quote the text they were given.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Presidio logs analysed words at DEBUG and chatty notices at INFO: only its errors
    # are shown. The analyzer's warnings are still made, for the filter that counts the
    # patterns it skipped on a regex timeout (sidecar.pii.internals.PatternTimeouts), and
    # then dropped by this one.
    logging.getLogger("presidio-anonymizer").setLevel(logging.ERROR)
    analyzer = logging.getLogger("presidio-analyzer")
    analyzer.setLevel(logging.WARNING)
    if _errors_only not in analyzer.filters:
        analyzer.addFilter(_errors_only)


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def error_frames(error: BaseException) -> str:
    """Where an error happened, without what it said."""
    frames = traceback.extract_tb(error.__traceback__)
    return " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}:{f.name}"
                       for f in reversed(frames[-8:]))

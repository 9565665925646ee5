# Process logging: the text and JSON line formats, and the request id that follows the work a
# request causes. Invariants: nothing here runs at import time; `setup_logging` is called once
# by the composition root; the current request id lives in a contextvar (set by the HTTP
# connection for each request, inherited by tasks and worker threads started meanwhile and by
# background jobs submitted meanwhile), so any log line written for a request carries its
# id, whichever layer writes it.
from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from dataclasses import dataclass

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class LogConfig:
    format: str = "text"         # "text" for people, "json" (one object a line) for machines
    level: str = "info"
    access: bool = True          # one line per request on logger tessera.access

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"log format must be one of {', '.join(FORMATS)}, "
                             f"got {self.format!r}")
        if self.level not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {self.level!r}")


request_id: contextvars.ContextVar[str] = contextvars.ContextVar("tessera_request_id",
                                                                  default="")

# Fields of a LogRecord that are not "extra" data passed by the caller.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "request_id", "taskName"}


class RequestIdFilter(logging.Filter):
    """Stamps every record with the request id of the work that wrote it ('' outside)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second: tuple[int, str] = (-1, "")     # (epoch second, its text)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """logging's own time text, its strftime done once per second (an access line a
        request: the strftime cost more than the rest of the line)."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, text = self._second
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (second, text)
        return self.default_msec_format % (text, record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            line = super().format(record)
        else:       # logging.Formatter.format for this one format, without its generic steps
            record.message = message = record.getMessage()
            record.asctime = asctime = self.formatTime(record)
            line = f"{asctime} {record.levelname!s} {record.name!s}: {message}"
        rid = getattr(record, "request_id", "")
        if rid and record.name != "tessera.access":     # access lines start with the id
            line += f" [{rid}]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and any `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        rid = getattr(record, "request_id", "")
        if rid:
            doc["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(cfg: LogConfig = LogConfig(), stream=None) -> None:
    """Install one handler on the root logger writing `cfg.format` lines to `stream`."""
    fmt = cfg.format
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_tessera", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler._tessera = True      # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(getattr(logging, cfg.level.upper()))
    logging.getLogger("tessera.access").disabled = not cfg.access

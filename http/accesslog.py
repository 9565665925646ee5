# The access log line of one request, written cheaply on the event loop: the LogRecord is
# built directly (no caller lookup through the stack, none of LogRecord.__init__'s per-line
# work that is the same for every access line) and handed to the `tessera.access` logger,
# which filters and formats it as usual. Invariants: the record carries exactly what
# `access_log.info(ACCESS_FORMAT, *args, extra=...)` would (message, arguments and the extra
# fields the JSON format prints), so handlers, formats and `[log] access = false` (the logger
# disabled: nothing is built at all) behave as with a plain logging call.
from __future__ import annotations

import logging
import threading
import time

access_log = logging.getLogger("tessera.access")
ACCESS_FORMAT = '%s %s %s "%s %s" %d %d %.1fms'
_INFO = logging.INFO


class _AccessRecord(logging.LogRecord):
    """A LogRecord filled in by `log_access` instead of LogRecord.__init__."""

    def __init__(self) -> None:          # never called: records are made with __new__
        raise TypeError("use log_access")


_PER_LINE = ("args", "created", "msecs", "relativeCreated", "thread", "threadName",
             "request_id", "client", "method", "target", "route", "status", "bytes",
             "bytes_in", "duration_ms")


def _constant_fields() -> dict:
    """The fields every access record shares (taken from a real record, so the set of
    attributes matches this Python's LogRecord), then every per-line field (None until set),
    in the order log_access sets them: a record's dict is a copy of this one, filled in."""
    probe = logging.LogRecord(access_log.name, _INFO, __file__, 0, ACCESS_FORMAT, None, None,
                              "log_access")
    fields = dict(vars(probe))
    for key in ("args", "created", "msecs", "relativeCreated", "thread", "threadName"):
        fields.pop(key, None)
    fields["exc_info"] = fields["exc_text"] = fields["stack_info"] = None
    for key in _PER_LINE:
        fields[key] = None
    return fields


_fields: dict | None = None


def log_access(rid: str, client: str, route: str, method: str, target: str, status: int,
               sent: int, received: int, seconds: float) -> None:
    """One access line (sent = -1: the response was cut off)."""
    global _fields
    logger = access_log
    if not logger.isEnabledFor(_INFO):
        return
    if _fields is None:
        _fields = _constant_fields()
    ms = seconds * 1000.0
    now = time.time()
    rec = _AccessRecord.__new__(_AccessRecord)
    rec.__dict__ = d = _fields.copy()      # sized once: no rehash while it is filled in
    d["args"] = (rid, client, route or "-", method, target, status, sent, ms)
    d["created"] = now
    d["msecs"] = (now - int(now)) * 1000.0
    d["relativeCreated"] = (now - logging._startTime) * 1000.0   # type: ignore[attr-defined]
    d["thread"] = threading.get_ident()
    d["threadName"] = threading.current_thread().name
    d["request_id"] = rid
    d["client"] = client
    d["method"] = method
    d["target"] = target
    d["route"] = route
    d["status"] = status
    d["bytes"] = sent
    d["bytes_in"] = received
    d["duration_ms"] = round(ms, 3)
    logger.handle(rec)

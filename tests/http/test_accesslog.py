# The access line's record (tessera.http.accesslog): built directly, it carries what a plain
# logging call with the same message, arguments and extra fields would (extras in its order).
from __future__ import annotations

import logging

import pytest

from tessera.http.accesslog import ACCESS_FORMAT, access_log, log_access

ARGS = ("req-0123abcd-0123-4123-8123-0123456789ab", "127.0.0.1:4000", "/v2/images/{image_id}",
        "GET", "/v2/images/0123abcd-0123-4123-8123-0123456789ab", 200, 1234, 0, 0.0021)


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept():
    handler = Keep()
    level, disabled = access_log.level, access_log.disabled
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.disabled = False
    yield handler.records
    access_log.removeHandler(handler)
    access_log.setLevel(level)
    access_log.disabled = disabled


def test_the_record_is_a_plain_logging_calls(kept):
    rid, client, route, method, target, status, sent, received, seconds = ARGS
    log_access(*ARGS)
    log_access(*ARGS)                       # a second record does not share the first's dict
    access_log.info(ACCESS_FORMAT, rid, client, route, method, target, status, sent,
                    seconds * 1000.0, extra={
                        "request_id": rid, "client": client, "method": method,
                        "target": target, "route": route, "status": status, "bytes": sent,
                        "bytes_in": received, "duration_ms": round(seconds * 1000.0, 3)})
    ours, again, plain = kept
    assert ours.__dict__ is not again.__dict__
    formatted = {"message", "asctime"}          # set by whichever handler formats it
    assert set(vars(ours)) - formatted == set(vars(plain)) - formatted
    extras = ["request_id", "client", "method", "target", "route", "status", "bytes",
              "bytes_in", "duration_ms"]
    assert [k for k in vars(ours) if k in extras] == [k for k in vars(plain) if k in extras]
    assert ours.getMessage() == plain.getMessage()
    for key in ("name", "levelno", "levelname", "msg", "args", "exc_info", "stack_info",
                "request_id", "client", "method", "target", "route", "status", "bytes",
                "bytes_in", "duration_ms", "thread", "threadName", "process"):
        assert getattr(ours, key) == getattr(plain, key), key
    assert abs(ours.created - plain.created) < 60
    assert 0 <= ours.msecs < 1000


def test_a_disabled_access_log_builds_nothing(kept):
    access_log.disabled = True
    log_access(*ARGS)
    assert kept == []

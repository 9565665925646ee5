# The text log format: its time text (made once per second) is logging's own, line for line.
from __future__ import annotations

import logging

from tessera.logs import TextFormatter


def test_text_lines_match_loggings_own_formatter_across_seconds():
    ours = TextFormatter()
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for created in (1.7e9 + 0.0001, 1.7e9 + 0.5, 1.7e9 + 0.9999, 1.7e9 + 1.25, 1.7e9 + 0.75,
                    1e9 + 86399.999, 1e9 + 86400.001):
        rec = logging.LogRecord("tessera.access", logging.INFO, __file__, 1, "%s %d",
                                ("req-x", 200), None)
        rec.created = created
        rec.msecs = (created - int(created)) * 1000
        assert ours.format(rec) == plain.format(rec)
    rec.created, rec.msecs = 1.7e9, 0.0
    assert ours.formatTime(rec, "%H") == plain.formatTime(rec, "%H")


def test_exceptions_stacks_and_request_ids_are_kept():
    ours = TextFormatter()
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        exc = sys.exc_info()
    for kwargs in ({"exc_info": exc}, {"sinfo": "Stack (most recent call last):\n  here"}):
        rec = logging.LogRecord("tessera.http", logging.ERROR, __file__, 1, "failed %s",
                                ("x",), kwargs.get("exc_info"), sinfo=kwargs.get("sinfo"))
        assert ours.format(rec) == plain.format(rec)
        assert "boom" in ours.format(rec) or "here" in ours.format(rec)
    rec = logging.LogRecord("tessera.engine", logging.INFO, __file__, 1, "done", None, None)
    rec.request_id = "req-1"
    assert ours.format(rec) == plain.format(rec) + " [req-1]"
    rec = logging.LogRecord("tessera.access", logging.INFO, __file__, 1, "req-1 line", None,
                            None)
    rec.request_id = "req-1"
    assert ours.format(rec) == plain.format(rec)       # access lines start with the id

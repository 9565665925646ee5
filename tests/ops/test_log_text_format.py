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

"""zkv.repeatlog: an error that repeats every loop turn is logged once per `every` seconds."""

from __future__ import annotations

import logging

from zkv.repeatlog import MAX_KINDS, RepeatLog


def _fail(rl: RepeatLog, message: str, exc=OSError) -> None:
    try:
        raise exc(28, message) if exc is OSError else exc(message)
    except Exception:
        rl.exception("error in the reactor loop; continuing")


def test_a_repeating_error_is_logged_once_then_counted(caplog):
    now = [0.0]
    rl = RepeatLog(logging.getLogger("zkv.test.repeat"), every=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="zkv.test.repeat"):
        for i in range(1000):  # a full disk: every turn, for 9.99 s
            now[0] = i * 0.00999
            _fail(rl, "No space left on device")
        assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None
        _fail(rl, "Bad file descriptor", ValueError)  # another error: logged at once
        assert len(caplog.records) == 2
        now[0] = 10.5
        _fail(rl, "No space left on device")
    said = [r.getMessage() for r in caplog.records]
    assert said[2] == "error in the reactor loop; continuing (999 more times in the last 10 s)"
    assert "No space left on device" in caplog.text  # (the traceback names it)


def test_distinct_errors_remembered_are_capped():
    rl = RepeatLog(logging.getLogger("zkv.test.repeat2"), clock=lambda: 0.0)
    for i in range(MAX_KINDS * 3):
        _fail(rl, f"error {i}", ValueError)
    assert len(rl.seen) <= MAX_KINDS

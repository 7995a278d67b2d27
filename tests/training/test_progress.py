"""headkit.training.progress: the live progress line and quiet_tensorflow (no TensorFlow needed)."""

from __future__ import annotations

import io
import logging
import os

from headkit.training.progress import ProgressDisplay, quiet_tensorflow


def test_progress_display_redraws_in_place_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    now = [0.0]
    stream = Terminal()
    display = ProgressDisplay(100, metric="y/rmse", stream=stream, clock=lambda: now[0])
    display.update(10, 0.5)
    now[0] = 1.0
    display.update(30, 0.25)  # 20 steps in 1 second: 20 steps/s, 70 left
    display.evaluated(30, 0.4, 0.3, 20)
    display.close("done")
    assert stream.getvalue().startswith("\r\x1b[K")
    assert "step 30/100  loss 0.25  20.0 steps/s  ETA 4s  y/rmse 0.4 (best 0.3 @ 20)" in (
        stream.getvalue())
    assert stream.getvalue().endswith("\ndone\n")


def test_quiet_tensorflow_hides_info_and_can_bring_it_back(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    logger = logging.getLogger("tensorflow")
    before = logger.level
    try:
        quiet_tensorflow()
        assert logger.level == logging.ERROR and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
        quiet_tensorflow(False)
        assert logger.level == logging.INFO and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    finally:
        logger.setLevel(before)

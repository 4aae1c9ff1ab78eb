"""The ServerApp's output in the collector's log (flrepo.fl.message.executor.Prefixed): every line
prefixed once however the text is split into writes, and Flower's output mirror, which replaces
`write` on the stream, still sees the text unprefixed."""

from __future__ import annotations

import io
from queue import Queue

from flwr.supercore import logger as flower_logger

from flrepo.fl.message.executor import SERVERAPP_PREFIX, Prefixed


def test_every_line_is_prefixed_once_however_the_writes_split_it():
    raw = io.StringIO()
    stream = Prefixed(raw, SERVERAPP_PREFIX)
    for piece in ["one", " line\ntwo\n", "", "\n", "three\nfour"]:
        assert stream.write(piece) == len(piece)
    stream.flush()
    assert raw.getvalue() == "[ServerApp] one line\n[ServerApp] two\n[ServerApp] \n[ServerApp] three\n[ServerApp] four"
    assert stream.getvalue() == raw.getvalue()  # anything else is the raw stream's


def test_flowers_mirror_ships_the_text_unprefixed(monkeypatch):
    """Flower 1.42's mirror_output_to_queue wraps sys.stdout's `write` (this fails loudly if it stops
    doing so: the lines would then reach either the log or the SuperLink only)."""
    raw = io.StringIO()
    monkeypatch.setattr("sys.stdout", Prefixed(raw, SERVERAPP_PREFIX))
    monkeypatch.setattr("sys.stderr", Prefixed(io.StringIO(), SERVERAPP_PREFIX))
    monkeypatch.setattr(flower_logger.console_handler, "stream", flower_logger.console_handler.stream)
    queue: Queue[str | None] = Queue()
    flower_logger.mirror_output_to_queue(queue)
    import sys

    sys.stdout.write("Final results\n")
    assert raw.getvalue() == "[ServerApp] Final results\n"
    assert queue.get_nowait() == "Final results\n"

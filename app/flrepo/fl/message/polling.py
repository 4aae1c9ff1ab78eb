"""Polling intervals that start short and grow: Flower's Message API is pull-based, so whoever waits
for a message asks again and again. A fixed long sleep (Flower's 3 s) puts that sleep into every
round; a fixed short one costs requests while nothing happens. Asking quickly just after something
happened and more slowly the longer nothing does bounds the added delay to a fraction of the wait,
at a handful of requests per wait."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """The next sleep: `first` after a `reset`, then `factor` times longer each time, at most `cap`."""

    first: float
    factor: float
    cap: float
    _next: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap or self.factor < 1:
            raise ValueError(f"need 0 < first <= cap and factor >= 1: {self}")
        self._next = self.first

    def reset(self) -> None:
        """Something happened: ask again soon."""
        self._next = self.first

    def interval(self) -> float:
        """How long to sleep now (and make the following one longer)."""
        now = self._next
        self._next = min(self.cap, now * self.factor)
        return now

    def sleep(self) -> None:
        time.sleep(self.interval())

"""A fixed order for the sites' replies of a round before the task's strategy aggregates them.

Both Flower runtimes hand a strategy the replies in the order they arrived, and a weighted sum of
float32 arrays depends on the order of its terms: the same task, with the same sites training the
same way, ended 0.6 points apart on the two runtimes, and differently from run to run on one. The
collectors sort the replies by `reply_key` first (the strategies stay Flower's, unmodified), so a
round's aggregate depends on what the sites sent, never on when it arrived.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any


def reply_key(blobs: Iterable[bytes], metrics: Mapping[str, Any]) -> tuple[bytes, str]:
    """A reply's sort key: a digest of its arrays' bytes (as they are serialized; each blob's length
    included, so that no two different lists of blobs run together), then its metrics (which hold
    the reply's weight: two sites sending equal arrays with different sample counts still sort)."""
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(len(blob).to_bytes(8, "little"))
        digest.update(blob)
    return digest.digest(), repr(sorted((str(name), repr(value)) for name, value in metrics.items()))

"""Flower's log lines once, through flrepo's handler: Flower's logger carries its own console
handler and also propagates to the root logger, where flrepo's handler prints every line again."""

from __future__ import annotations

import logging

FLOWER_LOGGER = "flwr"


def through_flrepo_only() -> None:
    """Drop Flower's own console handler (flrepo's handler, with times, prints what it logs)."""
    from flwr.supercore.logger import console_handler  # the handler flwr.common.logger also uses

    logging.getLogger(FLOWER_LOGGER).removeHandler(console_handler)

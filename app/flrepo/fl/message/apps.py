"""flrepo's ServerApp and ClientApp, as the task's Flower App Bundle names them (flrepo.fl.message.fab).

Flower runs the ServerApp in a `flwr-serverapp` process under the collector's SuperLink, and the
ClientApp in a `flwr-clientapp` process per message under each site's SuperNode; both inherit the
environment of the `flrepo` command that started the SuperLink or SuperNode (repository URL, API
key, signature keys).
"""

from __future__ import annotations

import logging
import os

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from flrepo.fl.message.packing import packed_transport
from flrepo.fl.message.site_privacy import site_privacy
from flrepo.logs import configure_logging

server_app = ServerApp()
# Outermost: the wire's packed records (flrepo.fl.message.packing); then Flower's privacy mods, when a
# task's round asks.
client_app = ClientApp(mods=[packed_transport, site_privacy])


def _logging() -> None:
    configure_logging(os.environ.get("FLREPO_LOG_LEVEL", "INFO"), json_logs=False)
    # Flower ships this process's output to the SuperLink over HTTP: logging each of those
    # requests would feed itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Flower's own console handler would print every flwr line a second time (it propagates to
    # ours too); Flower ships what reaches stdout/stderr, so ours alone, with times, is enough.
    from flwr.supercore.logger import console_handler

    logging.getLogger("flwr").removeHandler(console_handler)


@server_app.main()
def train_task(grid: Grid, context: Context) -> None:
    """Train the repository task named in the run's config."""
    from flrepo.fl.message.server import run_task

    _logging()
    run_task(grid, dict(context.run_config))


@client_app.train()
def train(message: Message, context: Context) -> Message:
    """Train the received weights on this site's data."""
    from flrepo.fl.message.client import train_reply

    return train_reply(message, dict(context.node_config))


@client_app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Evaluate the received weights on this site's validation split."""
    from flrepo.fl.message.client import evaluate_reply

    return evaluate_reply(message, dict(context.node_config))

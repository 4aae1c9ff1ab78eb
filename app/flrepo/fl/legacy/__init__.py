"""Flower's legacy gRPC runtime (`start_server`/`start_client`, under `flwr.compat`): the
aerOS-compatible path, for tasks whose strategy is a `flwr.server.strategy` object. It adapts the
runtime-neutral core (flrepo.fl.core) to that API and never imports flrepo.fl.message.

- collector: Flower's gRPC server in the collector's main thread, one task to its end
- strategy: the task's strategy wrapped to report, checkpoint and bound the participant wait
- participant: the site trainer as Flower's NumPyClient, kept connected by the core's loop
"""

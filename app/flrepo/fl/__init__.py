"""The Flower pairing: a training collector (Flower server) and local executions (Flower clients)
that take their strategy, model and transformations from the repository and report back to it.

Nothing here is imported by the API server: this is where pickles are loaded (after checking
their signature), and only by trusted collectors and clients.
"""

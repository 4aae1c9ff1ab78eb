"""Flower's Message API runtime for repository tasks whose strategy is a `flwr.serverapp.strategy`
object: the collector runs Flower's SuperLink (with TLS and SuperNode authentication) and submits a
run whose ServerApp trains the task; each local execution runs Flower's SuperNode, whose ClientApp
trains on the site's data.

- programs: Flower's programs started with this interpreter (so the apps can import flrepo)
- superlink: flower-superlink with its Fleet API alone on the participant-facing address
- fab: the Flower App Bundle naming flrepo's ServerApp and ClientApp
- apps: the ServerApp and the ClientApp; server and client: what they do
- collector and participant: the two sides, started by `flrepo collector` and `flrepo local-exec`
"""

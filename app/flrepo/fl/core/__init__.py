"""The runtime-neutral FL core: what a collector and a local execution do whichever Flower API
carries their messages. flrepo.fl.legacy and flrepo.fl.message adapt it to Flower's legacy gRPC
API and to its Message API; nothing here imports either of them, or Flower.

- link: the collector's line to its task (every status report, heartbeat and checkpoint it writes)
- lifecycle: the task's start (Running, with where to connect), stop, failing it (collector or
  site), the exit code
- resume: the resume point and checkpoint loading
- watch: "has the task ended", the collector's Heartbeat and the site's TaskWatch
- serving: how a collector serves (address, advertised address, TLS)
- discovery: how a site finds the collector (address, runtime, CA)
- reconnect: a site's stay in its task while its collector comes and goes
- trainer: the site trainer (model, data split, fit/evaluate)
- reporting: round reports and checkpoints, the participant wait, which metrics are kept
- publishing: the trained model and the aerOS training result, and undoing them
"""

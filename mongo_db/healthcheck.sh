#!/bin/bash
# Healthy when the final mongod answers `ping` on the container's own address. During the first
# start, the temporary mongod running the init scripts (and the dump restore) binds 127.0.0.1 only,
# so the API does not start against a half-restored database.
set -euo pipefail
exec mongosh --quiet --host "$(hostname)" --port 27017 --eval 'quit(db.adminCommand({ping: 1}).ok === 1 ? 0 : 1)'

#!/bin/bash
# First-start restore of a `mongodump --archive` file into the new database.
#
# Sourced (not executed) by the official mongo entrypoint from /docker-entrypoint-initdb.d/, only
# when the data directory is empty, against a temporary mongod on 127.0.0.1:27017 that runs without
# access control. Hence: no `exit` here (it would end the entrypoint), and no credentials needed.
#
# Environment:
#   FLREPO_DB_DUMP        the archive to restore (default /seed/db.dump, copied in from mongo_db/db.dump;
#                         a file mounted there at run time works too)
#   FLREPO_RESTORE_ARGS   extra mongorestore options, e.g. "--nsInclude=repository.* --nsInclude=repository_grid.*"
#
# A failing restore fails the container's first start. The data directory is then already
# initialised, so a plain restart would skip this script: remove the volume
# (`docker compose down -v`) after fixing the dump.

flrepo_restore_dump() {
	local dump="${FLREPO_DB_DUMP:-/seed/db.dump}"
	if [ ! -s "$dump" ]; then
		echo "flrepo: no database dump at $dump; starting with an empty database"
		return 0
	fi
	local args=(--host 127.0.0.1 --port 27017 --archive="$dump")
	# `mongodump --archive --gzip` archives need --gzip to be read back; recognise them by gzip's magic number.
	if [ "$(head -c 2 "$dump" | od -An -tx1 | tr -d ' \n')" = "1f8b" ]; then
		args+=(--gzip)
	fi
	# A whole-server dump also holds admin/config/local: restoring those would replace the root
	# user created from MONGO_INITDB_ROOT_* (and server-internal state) with the dumped server's.
	args+=(--nsExclude='admin.*' --nsExclude='config.*' --nsExclude='local.*')
	# Split the extra options on blanks without glob expansion (they often contain `*`).
	local extra=()
	read -r -a extra <<< "${FLREPO_RESTORE_ARGS:-}"
	args+=("${extra[@]}")
	echo "flrepo: restoring $dump ($(du -h "$dump" | cut -f1)) with mongorestore"
	mongorestore "${args[@]}"
	echo "flrepo: restore of $dump complete"
}

flrepo_restore_dump

// Command ferretdb runs FerretDB v1 with its SQLite backend as a MongoDB wire-protocol server
// for flrepo's tests and `make run`.
//
// We embed github.com/FerretDB/FerretDB/ferretdb from our own main package because
// `go install .../cmd/ferretdb` panics on a missing build/version/version.txt (FerretDB #2982).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// memoryLimit is Go's soft memory limit unless GOMEMLIMIT is set (see main).
const memoryLimit = 192 << 20

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on (host:port)")
	dir := flag.String("dir", "./ferretdb-data", "directory holding the SQLite databases (created if missing)")
	logLevel := flag.String("log-level", "warn", "log level: debug, info, warn or error")
	flag.Parse()

	// A GridFS read or write keeps only a few MiB live in FerretDB, so with Go's default GOGC=100 the
	// collector runs every few MiB decoded: 15-25% of the store's CPU per byte served or stored
	// (measured with flrepo's batched chunk reads, bench/RESULTS.md). At 400 the heap still stays
	// small (a few times what is live: tens of MiB). GOGC in the environment still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}

	// A soft limit on Go's memory: at GOGC=400 an upload's decoded messages left 580 MiB resident for good
	// (Go rarely gives freed pages back); with the limit the collector runs sooner once near it, and
	// FerretDB stayed at 151-215 MiB through a 1 GiB upload, another client's whole-file GridFS read and
	// a download (bench/RESULTS.md, #21). Nothing flrepo sends needs more: reads stream (pushdown.patch).
	// GOMEMLIMIT in the environment still wins ("off": none).
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}

	abs, err := filepath.Abs(*dir)
	if err != nil {
		fail("resolve data directory", err)
	}
	// FerretDB's SQLite handler requires an existing directory given as a file: URI with a trailing slash.
	// _txlock=immediate makes every transaction take the write lock at BEGIN: with the default
	// deferred BEGIN, concurrent writers (GridFS chunk inserts beside deletes) fail with
	// SQLITE_BUSY when a read transaction tries to upgrade, which busy_timeout cannot retry.
	if err := os.MkdirAll(abs, 0o755); err != nil {
		fail("create data directory", err)
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fail("parse -log-level", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/?_txlock=immediate",
	})
	if err != nil {
		fail("start FerretDB", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// The listener is bound by New; announce the URI so callers can wait for this line.
	fmt.Println(f.MongoDBURI())

	if err := f.Run(ctx); err != nil {
		fail("run FerretDB", err)
	}
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "ferretdb: %s: %v\n", what, err)
	os.Exit(1)
}

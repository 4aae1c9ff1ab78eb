"""`flrepo collector|local-exec|seed|demo`: the Flower runtime paired with the repository. They
need the extra `fl` (the demo also `server`), so its modules are imported only inside them."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from flrepo.cli.exit_codes import USAGE, exit_code
from flrepo.cli.extras import require_extra
from flrepo.cli.options import add_global_options
from flrepo.client import RepositoryClient, RepositoryError
from flrepo.logs import configure_logging
from flrepo.signing import SignatureError


def _fl_setup(args: argparse.Namespace) -> RepositoryClient:
    """The SDK client for the FL commands; keys come from FLREPO_SIGNING_KEY_FILE / FLREPO_TRUSTED_KEYS
    (flrepo.signing); --allow-legacy-hmac sets the migration flag for HMAC-signed items."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    configure_logging(os.environ.get("FLREPO_LOG_LEVEL", "INFO"), json_logs=False)
    repo = RepositoryClient(args.url, api_key=args.api_key, timeout=args.timeout)
    if getattr(args, "allow_legacy_hmac", False):
        repo.keyring = repo.keyring.allowing_legacy_hmac()
    return repo


def _fl_errors(command: str, run: Callable[[], int]) -> int:
    """An unreachable repository, an unknown task or a bad signature: one line and an exit code
    (the same codes as the collection commands), not a traceback."""
    try:
        return run()
    except (RepositoryError, SignatureError) as exc:
        sys.stderr.write(f"flrepo {command}: {exc}\n")
        return exit_code(exc)


def _collector(args: argparse.Namespace) -> int:
    require_extra("fl")
    from flrepo.fl import collector
    from flrepo.fl.tls import TlsError, server_tls

    try:
        tls = server_tls(args.ssl_ca_certfile, args.ssl_certfile, args.ssl_keyfile, args.tls_dir)
    except TlsError as exc:
        sys.stderr.write(f"flrepo collector: {exc}\n")
        return USAGE
    if tls and args.insecure:
        sys.stderr.write("flrepo collector: --insecure and TLS certificates exclude each other\n")
        return USAGE
    serving = collector.Serving(args.address, args.advertise, tls, args.insecure)
    with _fl_setup(args) as repo:
        return _fl_errors("collector", lambda: collector.run(repo, args.task, serving, args.allow_unsigned))


def _local_exec(args: argparse.Namespace) -> int:
    require_extra("fl")
    from flrepo.fl import local_data, local_exec

    try:
        ca = Path(args.root_certificates).read_bytes() if args.root_certificates else None
        if args.participant_key and not Path(args.participant_key).is_file():
            raise OSError(f"{args.participant_key}: no such file")
    except OSError as exc:
        sys.stderr.write(f"flrepo local-exec: {exc}\n")
        return USAGE
    key = Path(args.participant_key) if args.participant_key else None
    site = local_exec.Site(args.server, ca, key, args.insecure, args.wait)

    def run() -> int:
        try:
            x, y = local_data.load(args.data, label=args.label, loader=args.data_loader)
        except local_data.DataError as exc:  # this site cannot take part: the task says why
            sys.stderr.write(f"flrepo local-exec: {exc}\n")
            local_exec.fail_site(repo, args.task, exc)
            return USAGE
        try:
            return local_exec.run(repo, args.task, site, x, y, args.allow_unsigned, seed=args.seed)
        except local_exec.DiscoveryTimeout as exc:
            sys.stderr.write(f"flrepo local-exec: {exc}\n")
            return 1

    try:
        with _fl_setup(args) as repo:
            return _fl_errors("local-exec", run)
    except local_exec.Stopped as stopped:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stopped.code)


def _seed(args: argparse.Namespace) -> int:
    require_extra("fl")
    from flrepo.fl.catalogue import seed

    def run() -> int:
        report = seed(repo)
        for item in report["added"]:
            sys.stdout.write(f"added {item}\n")
        for item in report["resigned"]:
            sys.stdout.write(f"re-signed {item} (it was unsigned or HMAC-signed)\n")
        for item in report["kept"]:
            sys.stdout.write(f"kept  {item} (already there)\n")
        return 0

    with _fl_setup(args) as repo:
        return _fl_errors("seed", run)


def _demo(args: argparse.Namespace) -> int:
    require_extra("server", "fl")  # the demo runs its own embedded service
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    from flrepo.fl import demo

    return demo.main(rounds=args.rounds, clients=args.clients, strategy=args.strategy, framework=args.framework)


def _add_fl_options(parser: argparse.ArgumentParser) -> None:
    # The repository's URL is the global --url, also spelled --repo here (its name before --url was global).
    add_global_options(parser, url_aliases=("--repo",))
    parser.add_argument(
        "--allow-unsigned", action="store_true", help="load strategies/transformations without a valid signature"
    )
    parser.add_argument(
        "--allow-legacy-hmac",
        action="store_true",
        help="migration: also accept HMAC signatures made before Ed25519 (secrets in FLREPO_LEGACY_HMAC_KEYS)",
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the FL commands: collector, local-exec, seed, demo."""
    _add_collector(sub)
    _add_local_exec(sub)
    _add_seed_and_demo(sub)


def _add_collector(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    env = os.environ.get
    collector = sub.add_parser("collector", help="run a task's training collector (Flower server or SuperLink)")
    collector.add_argument("--task", required=True, help="task id")
    collector.add_argument(
        "--address", default=env("FLREPO_FL_ADDRESS", "0.0.0.0:8080"), help="where Flower listens (HOST:PORT)"
    )
    collector.add_argument(
        "--advertise",
        default=env("FLREPO_FL_ADVERTISE"),
        metavar="HOST:PORT",
        help="the address participants are told, published in the task's status (e.g. a Kubernetes Service); "
        "default: --address with this host's name for a wildcard host",
    )
    tls = collector.add_argument_group(
        "TLS (legacy runtime: TLS when given; Message-API runtime: required unless --insecure)"
    )
    tls.add_argument(
        "--tls-dir",
        default=env("FLREPO_FL_TLS_DIR"),
        help="a directory with ca.crt, tls.crt and tls.key (a mounted Kubernetes TLS Secret)",
    )
    tls.add_argument("--ssl-ca-certfile", default=env("FLREPO_FL_SSL_CA_CERTFILE"), help="the CA certificate (PEM)")
    tls.add_argument("--ssl-certfile", default=env("FLREPO_FL_SSL_CERTFILE"), help="the server certificate (PEM)")
    tls.add_argument("--ssl-keyfile", default=env("FLREPO_FL_SSL_KEYFILE"), help="the server's private key (PEM)")
    tls.add_argument(
        "--insecure",
        action="store_true",
        default=env("FLREPO_FL_INSECURE", "") == "1",
        help="Message-API runtime: serve plaintext (no TLS, so no SuperNode authentication either)",
    )
    _add_fl_options(collector)
    collector.set_defaults(func=_collector)


def _add_local_exec(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    env = os.environ.get
    local = sub.add_parser("local-exec", help="run a local execution (Flower client or SuperNode) for a task")
    local.add_argument("--task", required=True, help="task id")
    local.add_argument(
        "--server",
        default=env("FLREPO_FL_SERVER"),
        help="the collector's address (HOST:PORT); default: the one it publishes in the task's status",
    )
    local.add_argument(
        "--wait",
        type=float,
        default=600.0,
        help="seconds to wait for the task's collector to publish its address (default 600)",
    )
    local.add_argument(
        "--root-certificates",
        default=env("FLREPO_FL_ROOT_CERTIFICATES"),
        help="the CA certificate (PEM) to trust instead of the one the task's collector publishes",
    )
    local.add_argument(
        "--participant-key",
        default=env("FLREPO_FL_PARTICIPANT_KEY"),
        help="Message-API runtime: this site's private key (OpenSSH ECDSA, `ssh-keygen -t ecdsa`); its public "
        "key must be in the task's participant_keys",
    )
    local.add_argument(
        "--insecure",
        action="store_true",
        default=env("FLREPO_FL_INSECURE", "") == "1",
        help="Message-API runtime: connect in plaintext (only to a collector started with --insecure)",
    )
    local.add_argument(
        "--data",
        required=True,
        help="this site's data: a .csv or .parquet table (numeric features and a label column), an .npz with "
        "arrays x and y, or digits:K/N (part K of N of the demo's digits set); with --data-loader, its argument",
    )
    local.add_argument("--label", default="label", help="the label column of a .csv or .parquet file (default: label)")
    local.add_argument(
        "--data-loader", metavar="MODULE:FUNCTION", help="a function returning (x, y); called with --data's value"
    )
    local.add_argument("--seed", type=int, default=0, help="seed of the local validation split and shuffling")
    _add_fl_options(local)
    local.set_defaults(func=_local_exec)


def _add_seed_and_demo(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    seed = sub.add_parser("seed", help="upload the signed catalogue of strategies and transformations")
    _add_fl_options(seed)
    seed.set_defaults(func=_seed)

    demo = sub.add_parser("demo", help="federated training end to end on an embedded store (about a minute)")
    demo.add_argument("--rounds", type=int, default=5)
    demo.add_argument("--clients", type=int, default=3)
    demo.add_argument(
        "--strategy",
        default="message-fedavg",
        help="a catalogue strategy: message-fedavg (default), message-fedprox, ... (Message API, TLS and SuperNode "
        "authentication); fedavg, fedprox, ... (legacy, as aerOS)",
    )
    demo.add_argument(
        "--framework",
        choices=["numpy", "pytorch", "keras"],
        default="numpy",
        help="the model's library (default numpy)",
    )
    demo.set_defaults(func=_demo)

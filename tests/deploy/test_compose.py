"""docker-compose.yml, the Dockerfiles and the database image's init scripts, checked without a Docker engine."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymongo.uri_parser import parse_uri

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
# ${NAME}, ${NAME:-default}, ${NAME:?error}
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, enough for this file."""

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op == ":-":
            return arg
        raise KeyError(f"{name} is required: {arg}")

    return VARIABLE.sub(sub, value)


def test_services_and_container_names_match_aeros(compose):
    services = {name: s for name, s in compose["services"].items() if not s.get("profiles")}
    assert set(services) == {"flrepository", "repositorydb"}
    assert services["flrepository"]["container_name"] == "flrepository"
    assert services["repositorydb"]["container_name"] == "flrepositorydb"
    assert services["flrepository"]["build"] == "."
    assert services["repositorydb"]["build"] == "./mongo_db"
    assert services["flrepository"]["image"] == "aeros/fl_repository:latest"
    assert services["repositorydb"]["image"] == "aeros/fl_repository_db:latest"


def test_api_published_on_9013_and_database_on_no_host_port(compose):
    services = compose["services"]
    assert services["flrepository"]["ports"] == ["9013:9012"]
    assert "ports" not in services["repositorydb"], "MongoDB must not be published on the host"
    assert "network_mode" not in services["repositorydb"]


def test_healthchecks_and_start_order(compose):
    api, db = compose["services"]["flrepository"], compose["services"]["repositorydb"]
    assert "/health" in " ".join(api["healthcheck"]["test"])
    assert db["healthcheck"]["test"] == ["CMD", "flrepo-db-healthcheck"]
    for check in (api["healthcheck"], db["healthcheck"]):
        assert {"interval", "timeout", "retries"} <= set(check)
    assert api["depends_on"] == {"repositorydb": {"condition": "service_healthy"}}
    image = (ROOT / "mongo_db" / "Dockerfile").read_text()
    assert "COPY healthcheck.sh /usr/local/bin/flrepo-db-healthcheck" in image


def test_env_wiring_credentials_come_from_dotenv(compose):
    api_env = compose["services"]["flrepository"]["environment"]
    db_env = compose["services"]["repositorydb"]["environment"]
    env = env_example()
    resolved = {k: interpolate(v, env) for k, v in api_env.items()}
    uri = parse_uri(resolved["FLREPO_MONGODB_URL"])
    assert uri["nodelist"] == [("repositorydb", 27017)]
    assert (uri["username"], uri["password"]) == (env["FLREPO_DB_USERNAME"], env["FLREPO_DB_PASSWORD"])
    assert uri["options"]["authSource"] == "admin"
    assert resolved["FLREPO_DB_NAME"] == "repository" and resolved["FLREPO_GRIDFS_DB_NAME"] == "repository_grid"
    for key in ("FLREPO_LOG_LEVEL", "FLREPO_MAX_UPLOAD_BYTES", "FLREPO_LIST_CAP"):
        assert key in api_env
    db_resolved = {k: interpolate(v, env) for k, v in db_env.items()}
    assert db_resolved["MONGO_INITDB_ROOT_USERNAME"] == env["MONGO_ROOT_USERNAME"]
    assert db_resolved["MONGO_INITDB_ROOT_PASSWORD"] == env["MONGO_ROOT_PASSWORD"]
    assert db_resolved["MONGO_INITDB_APP_USERNAME"] == env["FLREPO_DB_USERNAME"]
    assert db_resolved["MONGO_INITDB_APP_DATABASES"] == "repository,repository_grid"
    # No literal credential in the file: every secret is a ${...} taken from .env.
    for value in (api_env["FLREPO_MONGODB_URL"], *(db_env[k] for k in db_env if "PASSWORD" in k)):
        assert "${" in value
    # A missing .env fails loudly instead of starting MongoDB without a password.
    with pytest.raises(KeyError, match="MONGO_ROOT_PASSWORD"):
        interpolate(db_env["MONGO_INITDB_ROOT_PASSWORD"], {})


def test_every_required_variable_is_in_env_example_and_dotenv_is_ignored(compose):
    required = {m["name"] for m in VARIABLE.finditer(COMPOSE.read_text()) if m["op"] != ":-"}
    assert required <= set(env_example()), required - set(env_example())
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored


def secret_target(entry: str | dict[str, Any]) -> tuple[str, str]:
    """(secret name, path in the container) of a service's `secrets:` entry, as Compose mounts it."""
    if isinstance(entry, str):
        return entry, f"/run/secrets/{entry}"
    target = entry.get("target") or entry["source"]
    return entry["source"], target if target.startswith("/") else f"/run/secrets/{target}"


def test_api_keys_file_is_a_read_only_secret_named_by_flrepo_api_keys_file(compose):
    api = compose["services"]["flrepository"]
    mounted = dict(secret_target(entry) for entry in api["secrets"])
    keys_file = api["environment"]["FLREPO_API_KEYS_FILE"]
    assert keys_file in mounted.values(), (keys_file, mounted)
    (name,) = [n for n, path in mounted.items() if path == keys_file]
    # A file-based secret: Compose (v1.29 and v2) bind-mounts it read-only, no swarm needed.
    definition = compose["secrets"][name]
    assert set(definition) == {"file"}
    assert interpolate(definition["file"], {}) == "./api-keys.yaml"
    assert interpolate(definition["file"], env_example()) == env_example()["FLREPO_API_KEYS_PATH"]
    assert interpolate(definition["file"], {"FLREPO_API_KEYS_PATH": "/etc/flrepo/keys.json"}) == "/etc/flrepo/keys.json"
    # Only the API gets the keys; the database has nothing to do with them.
    assert "secrets" not in compose["services"]["repositorydb"]
    # The API's root filesystem stays read-only; the keys file is the only thing mounted in.
    assert api["read_only"] is True and "volumes" not in api


def test_anonymous_role_defaults_to_none(compose):
    value = compose["services"]["flrepository"]["environment"]["FLREPO_ANONYMOUS_ROLE"]
    assert interpolate(value, {}) == "none", "without .env, requests without a key must be refused"
    assert interpolate(value, env_example()) == "none" == env_example()["FLREPO_ANONYMOUS_ROLE"]
    # Legacy aerOS clients: one line in .env gives requests without a key a role.
    assert interpolate(value, {"FLREPO_ANONYMOUS_ROLE": "writer"}) == "writer"


DOCS_WITH_KEYS = (".env.example", "docs/DEPLOY.md")


def test_the_documented_key_commands_and_roles_work(tmp_path: Path, monkeypatch, capsys):
    """Every `flrepo keys create ...` the deployment docs show runs, and gives a keys file the service
    loads; every FLREPO_ANONYMOUS_ROLE value they show is one the service accepts."""
    from flrepo.cli.main import main
    from flrepo.server.auth import KeyStore, hash_key
    from flrepo.server.settings import Settings

    monkeypatch.chdir(tmp_path)
    commands = {
        c for doc in DOCS_WITH_KEYS for c in re.findall(r"flrepo (keys create [^`\n&|;#]+)", (ROOT / doc).read_text())
    }
    # Commands with placeholders (`--role ROLE`, `<file>`) are templates, not runnable as shown.
    concrete = [
        c
        for c in commands
        if "--role" in c and not any(tok.isupper() or "<" in tok or "..." in tok for tok in c.split())
    ]
    assert concrete, "the deployment docs show how to make the first key"
    for command in sorted(concrete):
        argv = command.split()
        assert main(argv) == 0, command
        out = capsys.readouterr().out
        key = re.search(r"^key:\s+(\S+)$", out, re.MULTILINE)[1]
        if "--file" in argv:  # the entry went to the file; else it is printed for the operator to add
            keys_file = Path(argv[argv.index("--file") + 1])
            assert KeyStore.from_settings(keys_file, "none").lookup(key) is not None, command
            keys_file.unlink()
        else:
            assert hash_key(key) in out
    roles = {r for doc in DOCS_WITH_KEYS for r in re.findall(r"FLREPO_ANONYMOUS_ROLE=(\w+)", (ROOT / doc).read_text())}
    assert roles
    for role in roles:
        assert Settings(anonymous_role=role).anonymous_role == role


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_keys_file_made_by_the_cli_works_where_compose_mounts_it(tmp_path: Path, suffix: str, compose, capsys):
    """`flrepo keys create --file` output, mounted under the secret's name (no suffix), is loaded."""
    from flrepo.cli.main import main
    from flrepo.server.auth import KeyStore, Role, hash_key

    host_file = tmp_path / f"api-keys{suffix}"
    keys = {}
    for role, key_id in (("admin", "ops"), ("writer", "collector")):
        assert main(["keys", "create", "--role", role, "--id", key_id, "--file", str(host_file)]) == 0
        keys[key_id] = re.search(r"^key:\s+(\S+)$", capsys.readouterr().out, re.MULTILINE)[1]
    assert not any(key in host_file.read_text() for key in keys.values()), "only hashes in the keys file"
    container_path = tmp_path / compose["services"]["flrepository"]["environment"]["FLREPO_API_KEYS_FILE"].lstrip("/")
    container_path.parent.mkdir(parents=True)
    container_path.write_bytes(host_file.read_bytes())
    store = KeyStore.from_settings(container_path, "none")
    assert store.anonymous == Role.NONE
    assert store.lookup(keys["ops"]).role == Role.ADMIN
    assert store.lookup(keys["collector"]).role == Role.WRITER
    assert store.lookup(keys["ops"]).sha256 == hash_key(keys["ops"])
    assert store.lookup("flr_not-a-key") is None


def test_named_volume_holds_the_data(compose):
    assert "repositorydb-data" in compose["volumes"]
    assert "repositorydb-data:/data/db" in compose["services"]["repositorydb"]["volumes"]


def test_compose_config_validates_when_a_compose_cli_is_installed():
    if shutil.which("docker-compose"):
        command = ["docker-compose"]
    elif (
        shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        command = ["docker", "compose"]
    else:
        pytest.skip("no docker-compose / docker compose CLI here; the YAML checks above still ran")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "--env-file", str(ROOT / ".env.example"), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_cli_resolves_the_keys_secret_and_the_anonymous_role(tmp_path: Path):
    if not shutil.which("docker-compose"):
        pytest.skip("no docker-compose (1.29) CLI here; the YAML checks above still ran")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLREPO_", "MONGO_", "COMPOSE_"))}

    def config(**extra: str) -> dict[str, Any]:
        result = subprocess.run(
            ["docker-compose", "-f", str(COMPOSE), "--env-file", str(ROOT / ".env.example"), "config"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**env, **extra},
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return yaml.safe_load(result.stdout)

    resolved = config()
    api = resolved["services"]["flrepository"]
    assert resolved["secrets"]["api_keys"]["file"] == str(ROOT / "api-keys.yaml")
    assert api["secrets"] == [{"source": "api_keys"}]
    assert api["environment"]["FLREPO_API_KEYS_FILE"] == "/run/secrets/api_keys"
    assert api["environment"]["FLREPO_ANONYMOUS_ROLE"] == "none"
    elsewhere = tmp_path / "keys.yaml"
    resolved = config(FLREPO_ANONYMOUS_ROLE="reader", FLREPO_API_KEYS_PATH=str(elsewhere))
    assert resolved["secrets"]["api_keys"]["file"] == str(elsewhere)
    assert resolved["services"]["flrepository"]["environment"]["FLREPO_ANONYMOUS_ROLE"] == "reader"


def test_api_dockerfile_is_multi_stage_non_root_and_healthchecked():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE)
    assert len(stages) >= 2, "wheels in one stage, runtime in the next"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and "slim" in base[1]
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0")), user
    assert re.search(r"^EXPOSE 9012$", text, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*", text, re.MULTILINE) and "/health" in text
    assert re.search(r'^CMD \["flrepo", "serve"\]', text, re.MULTILINE)
    # The API image (every stage but the separate `fl` target) installs the server extra and no other.
    api_text = re.sub(r"FROM \S+ AS fl\n.*?(?=\nFROM )", "", text, flags=re.S)
    assert set(re.findall(r"\[(\w+)\]", api_text)) == {"server"}, "only the server extra in the API image"
    ignore = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip()[:1] not in ("", "#")]
    assert ignore[0] == "*" and "!app/" in ignore and "!pyproject.toml" in ignore, "an allow-list build context"


def test_database_image_restores_the_dump_on_first_start_only():
    text = (ROOT / "mongo_db" / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{MONGO_IMAGE\}", text, re.MULTILINE) and "ARG MONGO_IMAGE=mongo:7" in text
    assert "/docker-entrypoint-initdb.d/" in text  # the official image runs these on an empty volume only
    assert "db.dum[p]" in text  # builds with and without a dump
    script = (ROOT / "mongo_db" / "restore-dump.sh").read_text()
    assert "mongorestore" in script and "--archive=" in script
    assert not re.search(r"^\s*exit\b", script, re.MULTILINE), "sourced by the entrypoint: no exit"


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is needed to run the init script")
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, None),
        (b"plain archive", "--archive={dump} --nsExclude=admin.* --nsExclude=config.* --nsExclude=local.* --drop"),
        (
            b"\x1f\x8bgzip",
            "--archive={dump} --gzip --nsExclude=admin.* --nsExclude=config.* --nsExclude=local.* --drop",
        ),
    ],
)
def test_restore_script_runs_mongorestore_only_when_a_dump_exists(tmp_path: Path, content, expected):
    fake = tmp_path / "bin" / "mongorestore"
    fake.parent.mkdir()
    log = tmp_path / "calls"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    dump = tmp_path / "db.dump"
    if content is not None:
        dump.write_bytes(content)
    (tmp_path / "admin.x").touch()  # a file that `admin.*` would match if the script globbed
    env = {
        **os.environ,
        "PATH": f"{fake.parent}:{os.environ['PATH']}",
        "FLREPO_DB_DUMP": str(dump),
        "FLREPO_RESTORE_ARGS": "--drop",
    }
    # Sourced under the entrypoint's own shell options, as the official image does.
    script = ROOT / "mongo_db" / "restore-dump.sh"
    result = subprocess.run(
        ["bash", "-c", f'set -Eeuo pipefail; . "{script}"; echo sourced-fine'],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.rstrip().endswith("sourced-fine"), result.stderr
    if expected is None:
        assert not log.exists()
    else:
        assert log.read_text().strip() == "--host 127.0.0.1 --port 27017 " + expected.format(dump=dump)


FL_SERVICES = {"seed", "collector", "local-exec-1", "local-exec-2", "local-exec-3"}


def test_fl_profile_is_off_unless_asked_for(compose):
    services = compose["services"]
    fl = {name for name, s in services.items() if s.get("profiles")}
    assert fl == FL_SERVICES
    for name in fl:
        assert services[name]["profiles"] == ["fl"], name  # `docker-compose up` alone starts none of them


def test_fl_profile_runs_a_collector_and_local_executions_each_on_its_own_data_file(compose):
    services = compose["services"]
    for name in FL_SERVICES:
        service = services[name]
        assert service["build"] == {"context": ".", "target": "fl"}, name
        assert "ports" not in service, name  # the Flower port stays on the compose network
        assert service["depends_on"]["flrepository"]["condition"] == "service_healthy", name
        assert "http://flrepository:9012" in service["command"], name
        # Keys only from .env: nothing secret is written into the file.
        env = service["environment"]
        assert {"FLREPO_API_KEY", "FLREPO_TRUSTED_KEYS"} <= set(env), name
        # Ed25519: only the publisher (seed) holds the private key; those who load can only verify.
        assert ("FLREPO_SIGNING_KEY" in env) == (name == "seed"), name
        assert "FLREPO_VERIFY_KEYS" not in env, name
        assert "http://flrepository:9012" in service["command"], name
        for key in ("FLREPO_API_KEY", "FLREPO_TRUSTED_KEYS"):
            assert interpolate(env[key], {}) == "" and "${" in env[key], (name, key)
        assert interpolate(env.get("FLREPO_FL_INSECURE", "0"), {}) == "0", name  # plaintext only when asked for
    collector = services["collector"]["command"]
    assert collector[0] == "collector"
    bind_host, bind_port = collector[collector.index("--address") + 1].rsplit(":", 1)
    advertised_host, advertised_port = collector[collector.index("--advertise") + 1].rsplit(":", 1)
    # Participants are told an address that reaches the collector on the compose network.
    assert bind_host == "0.0.0.0" and advertised_host == "collector" and advertised_port == bind_port
    sites = sorted(name for name in FL_SERVICES if name.startswith("local-exec-"))
    assert len(sites) == 3
    sources = set()
    for name in sites:
        command = services[name]["command"]
        assert command[0] == "local-exec" and "--server" not in command, name  # discovery through the task
        data = command[command.index("--data") + 1]
        (volume,) = services[name]["volumes"]
        source, target, mode = interpolate(volume, {}).split(":")
        assert target == data and mode == "ro", name
        sources.add(source)
        assert "depends_on" not in services[name] or "collector" not in services[name]["depends_on"], name
    assert sources == {f"./data/site-{k}.csv" for k in (1, 2, 3)}
    # Elsewhere with FL_DATA_DIR; the task with FL_TASK_ID, the same for the collector and every site.
    (volume,) = services["local-exec-2"]["volumes"]
    assert interpolate(volume, {"FL_DATA_DIR": "/srv/fl"}).startswith("/srv/fl/site-2.csv:")
    for name in ["collector", *sites]:
        command = [interpolate(part, {"FL_TASK_ID": "t1"}) for part in services[name]["command"]]
        assert command[command.index("--task") + 1] == "t1", name


def test_dockerfile_builds_the_api_last_and_an_fl_target():
    stages = re.findall(r"^FROM \S+ AS (\w+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert stages[-1] == "runtime" and "fl" in stages
    text = (ROOT / "Dockerfile").read_text()
    fl_stage = text.split("AS fl\n", 1)[1].split("\nFROM ", 1)[0]
    assert "ARG FL_EXTRAS=fl" in fl_stage and '".[${FL_EXTRAS}]"' in fl_stage and "USER ${UID}:${UID}" in fl_stage
    api_stage = text.rsplit("AS runtime", 1)[1]
    assert "[fl]" not in api_stage and "[test]" not in api_stage


def test_the_api_runs_flrepo_serve_from_the_image_and_metrics_need_a_key(compose):
    """compose starts the image's CMD (`flrepo serve`, where the connection bounds are), and so does
    `make run`; nothing starts uvicorn another way."""
    api = compose["services"]["flrepository"]
    assert "command" not in api and "entrypoint" not in api
    assert 'CMD ["flrepo", "serve"]' in (ROOT / "Dockerfile").read_text()
    assert "flrepo serve --embedded" in (ROOT / "Makefile").read_text()
    assert api["environment"]["FLREPO_METRICS_PUBLIC"] == "${FLREPO_METRICS_PUBLIC:-false}"


def test_every_service_rotates_its_logs_and_has_a_memory_limit(compose):
    assert len(compose["services"]) >= 6
    for name, service in compose["services"].items():
        logging_ = service.get("logging") or {}
        assert logging_.get("driver") == "json-file", name
        options = {k: interpolate(str(v), {}) for k, v in logging_["options"].items()}
        assert re.fullmatch(r"[0-9]+[kmg]", options["max-size"]) and int(options["max-file"]) >= 1, name
        limit = service.get("mem_limit") or service.get("deploy", {}).get("resources", {}).get("limits", {}).get(
            "memory"
        )
        assert limit and re.fullmatch(r"[0-9]+[kmg]", interpolate(str(limit), {})), name


def test_image_builds_install_from_the_constraints_file():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    pinned = {}
    for line in lines:
        name, sep, version = line.partition("==")
        assert sep and version and " " not in line, line  # exact versions only
        pinned[canonicalize_name(name)] = version
    text = (ROOT / "Dockerfile").read_text()
    installs = [
        line for line in text.splitlines() if re.search(r"pip (install|wheel)\b", line) and "uninstall" not in line
    ]
    resolving = [line for line in installs if "--no-index" not in line]  # the other installs resolve from PyPI
    assert resolving and all("-c constraints.txt" in line for line in resolving), resolving
    assert re.search(r"^COPY [^\n]*constraints\.txt", text, re.MULTILINE)
    assert "!constraints.txt" in (ROOT / ".dockerignore").read_text().splitlines()
    # Every dependency the API image installs is pinned.
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["server"]]
    missing = [r for r in wanted if canonicalize_name(Requirement(r).name) not in pinned]
    assert missing == []
    assert "constraints:" in (ROOT / "Makefile").read_text()

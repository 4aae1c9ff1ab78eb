"""The Helm chart: `helm lint` and `helm template` succeed, and the rendered manifests say what they must.

helm comes from tools/install_helm.sh (tools/bin/helm), else $HELM_BIN, else PATH. Without it the
tests skip — except under CI=true, where a missing helm is a failure, not a skip.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "flrepository"
RELEASE = "flrepository"


@cache
def helm_binary() -> str | None:
    candidates = [os.environ.get("HELM_BIN"), str(ROOT / "tools" / "bin" / "helm"), shutil.which("helm")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def helm() -> str:
    binary = helm_binary()
    if binary is None:
        message = "helm not found: run tools/install_helm.sh (builds the pinned helm into tools/bin)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must check the chart", pytrace=False)
        pytest.skip(message)
    return binary


def run(helm: str, *args: str) -> str:
    result = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def render(helm: str, *values: str, values_file: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    sets = [arg for value in values for arg in ("--set", value)]
    with tempfile.TemporaryDirectory() as tmp:
        if values_file is not None:
            path = Path(tmp) / "values.yaml"
            path.write_text(yaml.safe_dump(values_file))
            sets += ["--values", str(path)]
        out = run(helm, "template", RELEASE, str(CHART), "--namespace", "fl", *sets)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def refused(helm: str, *values: str, values_file: dict[str, Any] | None = None) -> str:
    """helm template's error output for values that must not render."""
    sets = [arg for value in values for arg in ("--set", value)]
    with tempfile.TemporaryDirectory() as tmp:
        if values_file is not None:
            path = Path(tmp) / "values.yaml"
            path.write_text(yaml.safe_dump(values_file))
            sets += ["--values", str(path)]
        result = subprocess.run(
            [helm, "template", RELEASE, str(CHART), *sets], capture_output=True, text=True, timeout=120, check=False
        )
    assert result.returncode != 0, f"rendered although it should not: {values} {values_file}"
    return result.stderr


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def test_lint_passes_strict(helm: str) -> None:
    run(helm, "lint", "--strict", str(CHART))
    run(helm, "lint", "--strict", str(CHART), "--set", "mongodb.enabled=false,externalMongodb.existingSecret=atlas")


def test_api_service_is_nodeport_30001_and_mongodb_is_never_exposed(helm: str) -> None:
    docs = render(helm)
    api = one(docs, "Service", RELEASE)
    assert api["spec"]["type"] == "NodePort"
    assert api["spec"]["ports"] == [
        {"name": "http", "port": 9012, "targetPort": "http", "protocol": "TCP", "nodePort": 30001}
    ]
    mongo = one(docs, "Service", f"{RELEASE}-mongodb")
    assert mongo["spec"]["type"] == "ClusterIP" and mongo["spec"]["clusterIP"] == "None"
    assert all("nodePort" not in p for p in mongo["spec"]["ports"])
    # The only NodePort of the whole chart is the API's.
    node_ports = [d["metadata"]["name"] for d in find(docs, "Service") if d["spec"].get("type") == "NodePort"]
    assert node_ports == [RELEASE]
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "mongodb"


def test_api_deployment_probes_resources_and_non_root(helm: str) -> None:
    docs = render(helm)
    deployment = one(docs, "Deployment", RELEASE)
    api = container(deployment, "api")
    assert api["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert api["ports"][0]["containerPort"] == 9012
    assert {"cpu", "memory"} <= set(api["resources"]["requests"]) and {"cpu", "memory"} <= set(
        api["resources"]["limits"]
    )
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    assert api["securityContext"]["allowPrivilegeEscalation"] is False
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    assert api["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # The pod template changes (and pods roll) when settings or credentials do.
    assert {"checksum/config", "checksum/secret"} <= set(deployment["spec"]["template"]["metadata"]["annotations"])


def test_settings_come_from_repository_configmap_and_credentials_from_the_secret(helm: str) -> None:
    docs = render(helm)
    configmap = one(docs, "ConfigMap", "repository-configmap")
    assert configmap["data"]["FLREPO_DB_NAME"] == "repository"
    assert configmap["data"]["FLREPO_GRIDFS_DB_NAME"] == "repository_grid"
    for key in ("FLREPO_LOG_LEVEL", "FLREPO_MAX_UPLOAD_BYTES", "FLREPO_LIST_CAP"):
        assert key in configmap["data"]
    assert all(isinstance(v, str) for v in configmap["data"].values())
    assert not any("MONGODB_URL" in k or "PASSWORD" in k for k in configmap["data"]), "secrets in the ConfigMap"

    secret = one(docs, "Secret", f"{RELEASE}-mongodb")
    assert {
        "mongodb-root-username",
        "mongodb-root-password",
        "mongodb-username",
        "mongodb-password",
        "mongodb-url",
    } <= set(secret["data"])
    url = base64.b64decode(secret["data"]["mongodb-url"]).decode()
    user = base64.b64decode(secret["data"]["mongodb-username"]).decode()
    password = base64.b64decode(secret["data"]["mongodb-password"]).decode()
    assert url == f"mongodb://{user}:{password}@{RELEASE}-mongodb.fl.svc:27017/?authSource=admin"
    assert len(password) >= 24  # generated when not given

    api = container(one(docs, "Deployment", RELEASE), "api")
    assert api["envFrom"] == [{"configMapRef": {"name": "repository-configmap"}}]
    assert env_of(api)["FLREPO_MONGODB_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": f"{RELEASE}-mongodb", "key": "mongodb-url"}
    }
    mongo = container(one(docs, "StatefulSet", f"{RELEASE}-mongodb"), "mongodb")
    env = env_of(mongo)
    for name, key in {
        "MONGO_INITDB_ROOT_USERNAME": "mongodb-root-username",
        "MONGO_INITDB_ROOT_PASSWORD": "mongodb-root-password",
        "MONGO_INITDB_APP_USERNAME": "mongodb-username",
        "MONGO_INITDB_APP_PASSWORD": "mongodb-password",
    }.items():
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": f"{RELEASE}-mongodb", "key": key}
    # No literal credentials anywhere in a workload.
    for workload in (*find(docs, "Deployment"), *find(docs, "StatefulSet")):
        for c in workload["spec"]["template"]["spec"]["containers"]:
            assert all("value" not in e or "PASSWORD" not in e["name"] for e in c.get("env", []))


def test_mongodb_statefulset_uses_mongo7_with_a_sized_claim(helm: str) -> None:
    docs = render(helm, "mongodb.persistence.size=20Gi", "mongodb.persistence.storageClass=fast")
    sts = one(docs, "StatefulSet", f"{RELEASE}-mongodb")
    assert sts["spec"]["serviceName"] == f"{RELEASE}-mongodb"
    mongo = container(sts, "mongodb")
    assert re.fullmatch(r"mongo:7\.0\.[0-9]+", mongo["image"])  # a patch release, not a moving tag
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(mongo)
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    mounts = {m["name"]: m["mountPath"] for m in mongo["volumeMounts"]}
    assert mounts["data"] == "/data/db" and mounts["initdb"] == "/docker-entrypoint-initdb.d"
    initdb = one(docs, "ConfigMap", f"{RELEASE}-mongodb-initdb")
    shipped = (ROOT / "mongo_db" / "20-create-app-user.js").read_text()
    assert initdb["data"]["20-create-app-user.js"] == shipped.rstrip("\n")
    assert (CHART / "files" / "create-app-user.js").read_text() == shipped, "keep the two init scripts identical"


def test_external_mongodb_from_an_existing_secret_replaces_the_statefulset(helm: str) -> None:
    docs = render(
        helm,
        "mongodb.enabled=false",
        "externalMongodb.existingSecret=atlas-uri",
        "externalMongodb.existingSecretKey=uri",
        "replicaCount=3",
    )
    assert not find(docs, "StatefulSet") and not find(docs, "NetworkPolicy")
    # No MongoDB Secret: the only Secrets left are the API keys (auth is on by default).
    assert sorted(d["metadata"]["name"] for d in find(docs, "Secret")) == [
        f"{RELEASE}-admin-key",
        f"{RELEASE}-api-keys",
    ]
    assert not find(docs, "Service", f"{RELEASE}-mongodb")
    deployment = one(docs, "Deployment", RELEASE)
    assert deployment["spec"]["replicas"] == 3
    assert env_of(container(deployment, "api"))["FLREPO_MONGODB_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "atlas-uri", "key": "uri"}
    }


def test_values_that_cannot_work_are_refused(helm: str) -> None:
    for values in (["mongodb.enabled=false"], ["service.nodePort=80"], ["service.type=Public"]):
        sets = [arg for value in values for arg in ("--set", value)]
        result = subprocess.run(
            [helm, "template", RELEASE, str(CHART), *sets], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode != 0, values


def test_config_values_reach_the_configmap(helm: str) -> None:
    docs = render(
        helm,
        "config.logLevel=DEBUG",
        "config.listCap=50",
        'config.extra.FLREPO_CORS_ORIGINS=["https://ui.example"]',
        "service.type=ClusterIP",
    )
    data = one(docs, "ConfigMap", "repository-configmap")["data"]
    assert data["FLREPO_LOG_LEVEL"] == "DEBUG" and data["FLREPO_LIST_CAP"] == "50"
    assert data["FLREPO_CORS_ORIGINS"] == '["https://ui.example"]'
    service = one(docs, "Service", RELEASE)
    assert service["spec"]["type"] == "ClusterIP" and "nodePort" not in service["spec"]["ports"][0]


# --- Authentication: on by default, with a working generated admin key. ---

KEYS_SECRET = f"{RELEASE}-api-keys"
ADMIN_SECRET = f"{RELEASE}-admin-key"
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def decode(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def keys_mount(docs: list[dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    """(FLREPO_API_KEYS_FILE, the Secret mounted there, that volume) of the API pods."""
    deployment = one(docs, "Deployment", RELEASE)
    api = container(deployment, "api")
    keys_file = env_of(api)["FLREPO_API_KEYS_FILE"]["value"]
    (mount,) = [m for m in api["volumeMounts"] if keys_file.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mount["readOnly"] is True
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    filename = keys_file[len(mount["mountPath"].rstrip("/")) + 1 :]
    assert volume["secret"]["items"] == [{"key": filename, "path": filename}]
    return keys_file, volume["secret"]["secretName"], volume


def test_auth_is_on_by_default_with_a_generated_admin_key(helm: str) -> None:
    docs = render(helm)
    keys_file, secret_name, _ = keys_mount(docs)
    assert secret_name == KEYS_SECRET
    api = container(one(docs, "Deployment", RELEASE), "api")
    assert env_of(api)["FLREPO_ANONYMOUS_ROLE"]["value"] == "none"
    # Probes stay on the two routes that need no key.
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    annotations = one(docs, "Deployment", RELEASE)["spec"]["template"]["metadata"]["annotations"]
    assert HEX64.match(annotations["checksum/api-keys"]), "pods roll when the keys change"

    keys_secret = decode(one(docs, "Secret", KEYS_SECRET))
    assert set(keys_secret) == {Path(keys_file).name}
    (entry,) = yaml.safe_load(keys_secret[Path(keys_file).name])
    assert entry["role"] == "admin" and entry["id"] == "admin"
    assert HEX64.match(entry["sha256"])

    admin = decode(one(docs, "Secret", ADMIN_SECRET))
    key = admin["api-key"]
    assert len(key) >= 40 and key.startswith("flr_")
    assert hashlib.sha256(key.encode()).hexdigest() == entry["sha256"]
    # The plain key is in its own Secret only: not in the keys file, an env var or anywhere else.
    for doc in docs:
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == ADMIN_SECRET:
            continue
        text = yaml.safe_dump(doc)
        encoded = base64.b64encode(key.encode()).decode()
        assert key not in text and encoded not in text, f"the admin key leaks into {doc['kind']} {doc['metadata']}"
        if doc["kind"] == "Secret":
            assert all(key not in value for value in decode(doc).values()), doc["metadata"]["name"]
    # Only the helm test pod reads it, from the Secret.
    test_pod = one(docs, "Pod")
    env = env_of(test_pod["spec"]["containers"][0])
    assert env["FLREPO_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": ADMIN_SECRET, "key": "api-key"}
    assert env["EXPECT_401_WITHOUT_KEY"]["value"] == "1"


def test_each_render_generates_a_new_key_and_the_chart_keeps_it_on_upgrade(helm: str) -> None:
    first = decode(one(render(helm), "Secret", ADMIN_SECRET))["api-key"]
    second = decode(one(render(helm), "Secret", ADMIN_SECRET))["api-key"]
    assert first != second, "a random key per install"
    # Without a cluster `lookup` finds nothing; check that it asks for the very Secret the chart renders.
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace (include "flrepository.auth.adminKeySecretName" .)' in helpers
    assert 'index $existing.data "api-key"' in helpers


async def test_rendered_keys_file_loads_and_the_generated_key_opens_the_api(helm: str, mongo_url: str, tmp_path):
    """What the operator reads from the admin-key Secret really works against the rendered keys file."""
    import httpx

    from flrepo.server.auth import KeyStore, Role, load_keys
    from flrepo.server.main import create_app
    from tests.helpers import drop, make_settings

    docs = render(helm)
    keys_file, secret_name, _ = keys_mount(docs)
    path = tmp_path / Path(keys_file).name  # same name, so the same JSON/YAML choice as in the pod
    path.write_text(decode(one(docs, "Secret", secret_name))[path.name])
    (loaded,) = load_keys(path)
    assert loaded.id == "admin" and loaded.role == Role.ADMIN
    key = decode(one(docs, "Secret", ADMIN_SECRET))["api-key"]
    assert KeyStore([loaded], Role.NONE).lookup(key) == loaded

    api_env = env_of(container(one(docs, "Deployment", RELEASE), "api"))
    settings = make_settings(mongo_url, api_keys_file=path, anonymous_role=api_env["FLREPO_ANONYMOUS_ROLE"]["value"])
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                assert (await client.get("/health")).status_code == 200
                assert (await client.get("/ready")).status_code == 200
                assert (await client.get("/model")).status_code == 401
                assert (await client.get("/model", headers={"Authorization": "Bearer flr_wrong"})).status_code == 401
                assert (await client.get("/model", headers={"Authorization": f"Bearer {key}"})).status_code == 200
                assert (await client.get("/model", headers={"X-API-Key": key})).status_code == 200
                created = await client.post(
                    "/model",
                    json={"model_name": "m", "model_version": "1", "meta": {"library": "keras"}},
                    headers={"X-API-Key": key},
                )
                assert created.status_code == 201, created.text
                assert (await client.delete("/model/m/1", headers={"X-API-Key": key})).status_code in (200, 204)
    finally:
        drop(settings)


def test_given_keys_are_exactly_the_entries_and_nothing_is_generated(helm: str) -> None:
    entries = [
        {"id": "ops", "role": "admin", "sha256": hashlib.sha256(b"ops-key").hexdigest().upper()},
        {"id": "collector", "role": "writer", "sha256": hashlib.sha256(b"collector-key").hexdigest()},
        {"id": "viewer", "role": "reader", "sha256": hashlib.sha256(b"viewer-key").hexdigest()},
    ]
    docs = render(helm, values_file={"auth": {"keys": entries}})
    keys_file, secret_name, _ = keys_mount(docs)
    assert secret_name == KEYS_SECRET
    rendered = yaml.safe_load(decode(one(docs, "Secret", KEYS_SECRET))[Path(keys_file).name])
    assert rendered == [{**e, "sha256": e["sha256"].lower()} for e in entries]
    assert not find(docs, "Secret", ADMIN_SECRET), "no generated key when keys are given"
    test_env = env_of(one(docs, "Pod")["spec"]["containers"][0])
    assert "FLREPO_API_KEY" not in test_env and test_env["EXPECT_401_WITHOUT_KEY"]["value"] == "1"


def test_existing_secret_is_mounted_and_nothing_is_generated(helm: str) -> None:
    docs = render(helm, "auth.existingSecret=flrepo-keys")
    keys_file, secret_name, _ = keys_mount(docs)
    assert (secret_name, keys_file) == ("flrepo-keys", "/etc/flrepo/keys/api-keys.yaml")
    assert not find(docs, "Secret", KEYS_SECRET) and not find(docs, "Secret", ADMIN_SECRET)
    docs = render(helm, "auth.existingSecret=flrepo-keys", "auth.existingSecretKey=keys.json")
    keys_file, secret_name, _ = keys_mount(docs)
    assert (secret_name, keys_file) == ("flrepo-keys", "/etc/flrepo/keys/keys.json")


def test_anonymous_role_for_legacy_clients(helm: str) -> None:
    docs = render(helm, "auth.anonymousRole=writer")
    assert env_of(container(one(docs, "Deployment", RELEASE), "api"))["FLREPO_ANONYMOUS_ROLE"]["value"] == "writer"
    assert env_of(one(docs, "Pod")["spec"]["containers"][0])["EXPECT_401_WITHOUT_KEY"]["value"] == ""
    keys_mount(docs)  # keys still work beside the anonymous role


def test_auth_disabled_renders_no_keys_file(helm: str) -> None:
    docs = render(helm, "auth.enabled=false")
    assert not find(docs, "Secret", KEYS_SECRET) and not find(docs, "Secret", ADMIN_SECRET)
    deployment = one(docs, "Deployment", RELEASE)
    api = container(deployment, "api")
    env = env_of(api)
    assert "FLREPO_API_KEYS_FILE" not in env
    assert env["FLREPO_ANONYMOUS_ROLE"]["value"] == "admin"
    assert [m["name"] for m in api["volumeMounts"]] == ["tmp"]
    assert [v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    assert "checksum/api-keys" not in deployment["spec"]["template"]["metadata"]["annotations"]
    assert "FLREPO_API_KEY" not in env_of(one(docs, "Pod")["spec"]["containers"][0])


def test_notes_tell_how_to_get_the_key_and_warn_when_open(helm: str, tmp_path: Path) -> None:
    # helm template does not print NOTES.txt: render it as an ordinary template of a copy.
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "templates" / "notes.txt")

    def notes(*values: str) -> str:
        sets = [arg for value in values for arg in ("--set", value)]
        result = subprocess.run(
            [helm, "template", RELEASE, str(chart), "-n", "fl", "--show-only", "templates/notes.txt", "--debug", *sets],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        # Not YAML, so helm reports a parse error after printing it with --debug.
        return result.stdout

    default = notes()
    assert f"kubectl get secret {ADMIN_SECRET} --namespace fl -o jsonpath='{{.data.api-key}}' | base64 -d" in default
    assert "Authorize" in default and "WARNING" not in default
    assert "WARNING: requests without a key get the reader role" in notes("auth.anonymousRole=reader")
    open_notes = notes("auth.enabled=false")
    assert "WARNING: auth.enabled is false" in open_notes and ADMIN_SECRET not in open_notes


@pytest.mark.parametrize(
    ("values", "values_file", "message"),
    [
        (["auth.anonymousRole=guest"], None, "anonymousRole"),
        (["auth.existingSecretKey=a/b"], None, "existingSecretKey"),
        (["auth.enable=false"], None, "additional properties 'enable'"),
        ([], {"auth": {"keys": [{"id": "x", "role": "root", "sha256": "0" * 64}]}}, "/auth/keys/0/role"),
        ([], {"auth": {"keys": [{"id": "x", "role": "admin", "sha256": "not-a-hash"}]}}, "/auth/keys/0/sha256"),
        ([], {"auth": {"keys": [{"id": "x", "role": "admin", "key": "plain"}]}}, "missing property 'sha256'"),
        (
            [],
            {"auth": {"keys": [{"id": "x", "role": "admin", "sha256": "0" * 64}] * 2}},
            "appears twice",
        ),
        (
            ["auth.existingSecret=k"],
            {"auth": {"keys": [{"id": "x", "role": "admin", "sha256": "0" * 64}]}},
            "one way only",
        ),
        (["config.extra.FLREPO_ANONYMOUS_ROLE=reader"], None, "auth.anonymousRole"),
        (["config.extra.FLREPO_API_KEYS_FILE=/k"], None, "auth.keys"),
        (["apiKeys.existingSecret=old"], None, "auth.existingSecret"),
    ],
)
def test_auth_values_that_cannot_work_are_refused(helm: str, values, values_file, message) -> None:
    assert message in refused(helm, *values, values_file=values_file)


def test_lint_passes_for_every_auth_mode(helm: str) -> None:
    for values in (
        ["auth.enabled=false"],
        ["auth.existingSecret=flrepo-keys"],
        ["auth.anonymousRole=reader"],
        [f"auth.keys[0].id=ops,auth.keys[0].role=admin,auth.keys[0].sha256={'a' * 64}"],
    ):
        run(helm, "lint", "--strict", str(CHART), *[arg for value in values for arg in ("--set", value)])


# --- federated training of one task (fl.*) ---------------------------------------------------------

FL_VALUES: dict[str, Any] = {
    "fl": {
        "enabled": True,
        "taskId": "Digits_FedAvg",
        "apiKey": {"existingSecret": "fl-key"},
        "trustedKeys": {"existingSecret": "fl-trusted", "existingSecretKey": "keys"},
        "collector": {"port": 9443, "tls": {"existingSecret": "fl-tls"}},
        "localExecutions": [
            {"name": "site-1", "existingClaim": "site-1-data"},
            {
                "name": "site-2",
                "hostPath": "/srv/fl/site-2",
                "file": "train.parquet",
                "label": "target",
                "participantKey": {"existingSecret": "site-2-key"},
                "nodeSelector": {"kubernetes.io/hostname": "node-2"},
            },
            {"name": "site-3", "existingClaim": "site-3-data"},
        ],
    }
}


def component(docs: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return [d for d in find(docs, kind) if d["metadata"]["labels"].get("app.kubernetes.io/component") == name]


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def test_fl_is_off_by_default(helm: str) -> None:
    docs = render(helm)
    assert find(docs, "Job") == [] and component(docs, "Service", "fl-collector") == []
    assert yaml.safe_load((CHART / "values.yaml").read_text())["fl"]["enabled"] is False


def test_fl_collector_job_and_the_service_it_advertises(helm: str) -> None:
    docs = render(helm, values_file=FL_VALUES)
    (job,) = component(docs, "Job", "fl-collector")
    (service,) = component(docs, "Service", "fl-collector")
    collector = pod_spec(job)["containers"][0]
    args = collector["args"]
    assert args[0] == "collector" and option(args, "--task") == "Digits_FedAvg"
    bind_host, bind_port = option(args, "--address").rsplit(":", 1)
    advertised_host, advertised_port = option(args, "--advertise").rsplit(":", 1)
    # Participants are told the Service's address, and the Service forwards to where Flower listens.
    assert bind_host == "0.0.0.0" and int(bind_port) == int(advertised_port) == 9443
    assert advertised_host == f"{service['metadata']['name']}.fl.svc"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9443 and service["spec"]["type"] == "ClusterIP"
    (container_port,) = collector["ports"]
    assert port["targetPort"] == container_port["name"] and container_port["containerPort"] == 9443
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # Only the collector matches: local executions and the API carry other components.
    for other in [*component(docs, "Job", "fl-local-execution"), one(docs, "Deployment")]:
        assert not service["spec"]["selector"].items() <= other["spec"]["template"]["metadata"]["labels"].items()
    # TLS from the Secret, mounted where --tls-dir points.
    mount = next(m for m in collector["volumeMounts"] if m["mountPath"] == option(args, "--tls-dir"))
    volume = next(v for v in pod_spec(job)["volumes"] if v["name"] == mount["name"])
    assert mount["readOnly"] and volume["secret"]["secretName"] == "fl-tls"
    assert {i["key"] for i in volume["secret"]["items"]} == {"ca.crt", "tls.crt", "tls.key"}
    assert env_of(collector)["FLREPO_URL"]["value"] == f"http://{RELEASE}.fl.svc:9012"
    assert pod_spec(job)["restartPolicy"] == "Never" and collector["securityContext"]["readOnlyRootFilesystem"]


def test_fl_advertised_address_can_be_set_for_sites_outside_the_cluster(helm: str) -> None:
    values = {"fl": {**FL_VALUES["fl"], "collector": {"serviceType": "NodePort", "nodePort": 30443, "port": 8080}}}
    values["fl"]["collector"]["advertise"] = "fl.example.org:30443"
    docs = render(helm, values_file=values)
    (service,) = component(docs, "Service", "fl-collector")
    assert service["spec"]["type"] == "NodePort" and service["spec"]["ports"][0]["nodePort"] == 30443
    args = pod_spec(one(docs, "Job", service["metadata"]["name"]))["containers"][0]["args"]
    assert option(args, "--advertise") == "fl.example.org:30443" and option(args, "--address") == "0.0.0.0:8080"
    assert "--tls-dir" not in args


def test_fl_one_job_per_local_execution_each_with_its_own_data(helm: str) -> None:
    docs = render(helm, values_file=FL_VALUES)
    jobs = {j["metadata"]["labels"]["flrepository/site"]: j for j in component(docs, "Job", "fl-local-execution")}
    assert sorted(jobs) == ["site-1", "site-2", "site-3"]
    assert len({j["metadata"]["name"] for j in jobs.values()}) == 3
    sources = {}
    for site, job in jobs.items():
        spec = pod_spec(job)
        (container,) = spec["containers"]
        args = container["args"]
        # The task id is passed; no --server: the local execution finds the collector through the task.
        assert args[0] == "local-exec" and option(args, "--task") == "Digits_FedAvg" and "--server" not in args
        mount = next(m for m in container["volumeMounts"] if option(args, "--data").startswith(m["mountPath"] + "/"))
        assert mount["readOnly"] is True
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        sources[site] = volume.get("persistentVolumeClaim", {}).get("claimName") or volume["hostPath"]["path"]
    assert sources == {"site-1": "site-1-data", "site-2": "/srv/fl/site-2", "site-3": "site-3-data"}
    site2 = pod_spec(jobs["site-2"])
    args = site2["containers"][0]["args"]
    assert option(args, "--data") == "/data/train.parquet" and option(args, "--label") == "target"
    assert site2["nodeSelector"] == {"kubernetes.io/hostname": "node-2"}
    key_mount = next(m for m in site2["containers"][0]["volumeMounts"] if m["name"] == "participant-key")
    assert option(args, "--participant-key").startswith(key_mount["mountPath"] + "/")
    assert next(v for v in site2["volumes"] if v["name"] == "participant-key")["secret"]["secretName"] == "site-2-key"
    assert "--participant-key" not in pod_spec(jobs["site-1"])["containers"][0]["args"]


def test_fl_pods_take_their_keys_from_secrets_only(helm: str) -> None:
    docs = render(helm, values_file=FL_VALUES)
    jobs = find(docs, "Job")
    assert len(jobs) == 4
    for job in jobs:
        env = env_of(pod_spec(job)["containers"][0])
        assert env["FLREPO_API_KEY"] == {
            "name": "FLREPO_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "fl-key", "key": "api-key"}},
        }
        assert env["FLREPO_TRUSTED_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "fl-trusted", "key": "keys"}
        assert all("valueFrom" in e for name, e in env.items() if "KEY" in name)
    # The chart makes no Secret for them: nothing secret is in values.
    assert not [
        s for s in find(docs, "Secret") if "fl" in s["metadata"]["labels"].get("app.kubernetes.io/component", "")
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"taskId": ""}, "set fl.taskId"),
        ({"apiKey": {"value": "flr_secret"}}, "additional properties 'value'"),
        ({"localExecutions": [{"name": "site-1"}]}, "oneOf"),
        ({"localExecutions": [{"name": "site-1", "existingClaim": "a", "hostPath": "/b"}]}, "oneOf"),
        ({"localExecutions": [{"name": "a", "existingClaim": "c1"}, {"name": "a", "existingClaim": "c2"}]}, "twice"),
        ({"localExecutions": [{"name": "Site_1", "existingClaim": "x"}]}, "/fl/localExecutions/0/name"),
        (
            {"localExecutions": [{"name": "s", "hostPath": "/d", "participantKey": {"existingSecretKey": "k"}}]},
            "existingSecret",
        ),
        ({"collector": {"insecure": True, "tls": {"existingSecret": "fl-tls"}}}, "exclude each other"),
    ],
)
def test_fl_values_that_cannot_work_are_refused(helm: str, change: dict[str, Any], message: str) -> None:
    assert message in refused(helm, values_file={"fl": {**FL_VALUES["fl"], **change}})


def test_lint_passes_with_fl(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "fl.yaml"
    values.write_text(yaml.safe_dump(FL_VALUES))
    run(helm, "lint", "--strict", str(CHART), "--values", str(values))


def test_every_deployment_runs_flrepo_serve_with_bounded_connections(helm: str) -> None:
    """The bounds live in `flrepo serve` (flrepo.server.serving): nothing may start the API another way."""
    docs = render(helm, "config.headerTimeoutS=5", "config.metricsPublic=true")
    api = container(one(docs, "Deployment", RELEASE), "api")
    assert api["command"] == ["flrepo", "serve"] and not api.get("args")
    data = one(docs, "ConfigMap", "repository-configmap")["data"]
    assert data["FLREPO_HEADER_TIMEOUT_S"] == "5" and data["FLREPO_METRICS_PUBLIC"] == "true"
    assert int(data["FLREPO_MAX_HEADER_BYTES"]) <= 65536 and float(data["FLREPO_IDLE_TIMEOUT_S"]) <= 30
    defaults = one(render(helm), "ConfigMap", "repository-configmap")["data"]
    assert defaults["FLREPO_METRICS_PUBLIC"] == "false"


def test_schema_refuses_unknown_keys_at_every_level(helm: str) -> None:
    for typo, where in (
        ("notARealKey=1", "notARealKey"),
        ("image.tagg=1", "tagg"),
        ("mongodb.persistence.sizee=1Gi", "sizee"),
        ("config.logLevell=DEBUG", "logLevell"),
        ("resources.limitss.cpu=1", "limitss"),
        ("securityContext.readOnlyRootFilesytem=false", "readOnlyRootFilesytem"),
        ("ingress.hosts[0].hostt=x", "hostt"),
        ("metrics.serviceMonitor.enabeld=true", "enabeld"),
        ("mongodb.auth.existingSecrett=x", "existingSecrett"),
    ):
        assert where in refused(helm, typo), typo
    # Maps of the user's own keys stay open.
    docs = render(helm, "podAnnotations.team=fl", "nodeSelector.disk=ssd", "resources.limits.nvidia\\.com/gpu=1")
    pod = one(docs, "Deployment", RELEASE)["spec"]["template"]
    assert pod["metadata"]["annotations"]["team"] == "fl" and pod["spec"]["nodeSelector"] == {"disk": "ssd"}


def test_every_object_in_the_schema_is_strict() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    loose: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            types = node.get("type")
            is_object = types == "object" or (isinstance(types, list) and "object" in types)
            if is_object and "properties" in node and node.get("additionalProperties") is not False:
                loose.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}/{index}")

    walk(schema, "")
    assert loose == []


def test_image_tag_defaults_to_the_app_version(helm: str) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    api = container(one(render(helm), "Deployment", RELEASE), "api")
    assert api["image"] == f"aeros/fl_repository:{app_version}"
    api = container(one(render(helm, "image.tag=latest"), "Deployment", RELEASE), "api")
    assert api["image"] == "aeros/fl_repository:latest"


def test_api_has_a_startup_probe(helm: str) -> None:
    api = container(one(render(helm), "Deployment", RELEASE), "api")
    probe = api["startupProbe"]
    assert probe["httpGet"] == {"path": "/health", "port": "http"}
    assert probe["failureThreshold"] * probe["periodSeconds"] >= 30


def test_existing_secrets_make_renders_identical_and_nothing_generated(helm: str) -> None:
    sets = ("mongodb.auth.existingSecret=mongo-creds", "auth.existingSecret=flrepo-keys")
    args = ("template", RELEASE, str(CHART), "--namespace", "fl", "--set", ",".join(sets))
    outputs = [run(helm, *args), run(helm, *args)]
    assert outputs[0] == outputs[1]
    # Without them every render generates new passwords and a new admin key (which GitOps tools see as drift).
    assert run(helm, "template", RELEASE, str(CHART)) != run(helm, "template", RELEASE, str(CHART))
    docs = [doc for doc in yaml.safe_load_all(outputs[0]) if doc]
    assert find(docs, "Secret") == []  # the chart makes no Secret: both come from outside
    mongo = env_of(container(one(docs, "StatefulSet", f"{RELEASE}-mongodb"), "mongodb"))
    for name, key in (
        ("MONGO_INITDB_ROOT_PASSWORD", "mongodb-root-password"),
        ("MONGO_INITDB_APP_PASSWORD", "mongodb-password"),
    ):
        assert mongo[name]["valueFrom"]["secretKeyRef"] == {"name": "mongo-creds", "key": key}
    assert mongo["MONGO_INITDB_APP_USERNAME"]["value"] == "flrepo"
    api = env_of(container(one(docs, "Deployment", RELEASE), "api"))
    assert api["MONGODB_APP_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "mongo-creds",
        "key": "mongodb-password",
    }
    # Kubernetes expands $(MONGODB_APP_PASSWORD): the chart never reads the password.
    url = api["FLREPO_MONGODB_URL"]["value"]
    assert url == f"mongodb://flrepo:$(MONGODB_APP_PASSWORD)@{RELEASE}-mongodb.fl.svc:27017/?authSource=admin"
    assert "both set" in refused(helm, "mongodb.auth.existingSecret=m", "mongodb.auth.password=p")


def test_ingress_with_class_hosts_and_tls(helm: str) -> None:
    assert find(render(helm), "Ingress") == []
    docs = render(
        helm,
        values_file={
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "0"},
                "hosts": [{"host": "repo.example.org", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                "tls": [{"secretName": "repo-tls", "hosts": ["repo.example.org"]}],
            },
            "service": {"type": "ClusterIP", "port": 9012},
        },
    )
    ingress = one(docs, "Ingress", RELEASE)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert ingress["spec"]["tls"] == [{"hosts": ["repo.example.org"], "secretName": "repo-tls"}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "repo.example.org"
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": RELEASE, "port": {"name": "http"}}
    service = one(docs, "Service", RELEASE)
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["ports"][0]["name"] == "http"
    assert "pathType" in refused(
        helm, "ingress.enabled=true", "ingress.hosts[0].paths[0].path=/", "ingress.hosts[0].paths[0].pathType=Any"
    )


def test_pod_disruption_budget(helm: str) -> None:
    assert find(render(helm), "PodDisruptionBudget") == []
    pdb = one(render(helm, "podDisruptionBudget.enabled=true", "replicaCount=3"), "PodDisruptionBudget", RELEASE)
    deployment = one(render(helm), "Deployment", RELEASE)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    pdb = one(
        render(helm, "podDisruptionBudget.enabled=true", "podDisruptionBudget.maxUnavailable=50%"),
        "PodDisruptionBudget",
    )
    assert pdb["spec"] == {"maxUnavailable": "50%", "selector": pdb["spec"]["selector"]}


def test_service_monitor_and_scrape_annotations(helm: str) -> None:
    assert find(render(helm), "ServiceMonitor") == []
    # With auth on, a ServiceMonitor without a key would only ever get 401.
    assert "reader key" in refused(helm, "metrics.serviceMonitor.enabled=true")
    docs = render(
        helm,
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.keySecret.name=scraper-key",
        "metrics.serviceMonitor.labels.release=prometheus",
    )
    monitor = one(docs, "ServiceMonitor", RELEASE)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"] == {"name": "scraper-key", "key": "api-key"}
    service = one(docs, "Service", RELEASE)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    public = one(render(helm, "metrics.serviceMonitor.enabled=true", "config.metricsPublic=true"), "ServiceMonitor")
    assert "authorization" not in public["spec"]["endpoints"][0]
    annotated = one(render(helm, "metrics.scrapeAnnotations=true", "config.metricsPublic=true"), "Deployment", RELEASE)
    annotations = annotated["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9012"
    assert (
        "prometheus.io/scrape"
        not in one(render(helm), "Deployment", RELEASE)["spec"]["template"]["metadata"]["annotations"]
    )

"""The Helm chart: `helm lint` and `helm template` succeed, and the rendered manifests say what they must.

helm comes from tools/install_helm.sh (tools/bin/helm), else $HELM_BIN, else PATH. Without it the
tests skip — except under CI=true, where a missing helm is a failure, not a skip.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
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


def render(helm: str, *values: str) -> list[dict[str, Any]]:
    sets = [arg for value in values for arg in ("--set", value)]
    out = run(helm, "template", RELEASE, str(CHART), "--namespace", "fl", *sets)
    return [doc for doc in yaml.safe_load_all(out) if doc]


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
    assert mongo["image"] == "mongo:7.0"
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
    assert not find(docs, "StatefulSet") and not find(docs, "Secret") and not find(docs, "NetworkPolicy")
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


def test_config_values_reach_the_configmap_and_api_keys_mount(helm: str) -> None:
    docs = render(
        helm,
        "config.logLevel=DEBUG",
        "config.listCap=50",
        "config.extra.FLREPO_ANONYMOUS_ROLE=reader",
        "apiKeys.existingSecret=flrepo-keys",
        "service.type=ClusterIP",
    )
    data = one(docs, "ConfigMap", "repository-configmap")["data"]
    assert data["FLREPO_LOG_LEVEL"] == "DEBUG" and data["FLREPO_LIST_CAP"] == "50"
    assert data["FLREPO_ANONYMOUS_ROLE"] == "reader"
    api = container(one(docs, "Deployment", RELEASE), "api")
    assert env_of(api)["FLREPO_API_KEYS_FILE"]["value"] == "/etc/flrepo/keys/keys.json"
    service = one(docs, "Service", RELEASE)
    assert service["spec"]["type"] == "ClusterIP" and "nodePort" not in service["spec"]["ports"][0]

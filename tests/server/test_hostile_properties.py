"""Property-based: hostile shapes drawn for every operation of the OpenAPI document, on the real wire
server. Beside the schemathesis run (`make fuzz`), which draws values that match the documented schemas,
this draws what schemas do not describe: integers of thousands of digits or beyond 64 bits, lone
surrogates (in JSON escapes and as broken UTF-8 in URLs), NaN and Infinity, control and format
characters, `.` and `..`, deep nesting, huge Range positions. No answer may be a 5xx or a dropped
connection.

FLREPO_HOSTILE_EXAMPLES sets the examples per operation (default 10 in the test suite; `make fuzz` runs
more), FLREPO_HOSTILE_SEED a random seed (default: derandomized, the same cases every run);
FLREPO_HOSTILE_REPORT names a file that receives one JSON line of figures per operation (tools/fuzz.py
prints their sum).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from flrepo.server.settings import Settings
from tests.helpers import create_app

EXAMPLES = int(os.environ.get("FLREPO_HOSTILE_EXAMPLES", "10"))
SEED = os.environ.get("FLREPO_HOSTILE_SEED")
REPORT = os.environ.get("FLREPO_HOSTILE_REPORT")

# Values that name the items the fixture creates, so hostile values also reach the deeper code paths.
VALID_PATH = {
    "model_name": "m",
    "model_version": "v1",
    "training_id": "r1",
    "configuration_id": "1",
    "strategy_name": "s",
    "transformation_id": "t.x",
    "task_id": "t1",
    "filename": "all.zip",
    "upload_id": "",  # set by the fixture: a resumable upload in progress
}
TRANSFORMATION = {
    "id": "t.x",
    "description": "d",
    "parameter_types": {"k": "int"},
    "default_values": {"k": 1},
    "outputs": ["np.ndarray"],
    "needs": {"storage": 0, "RAM": 0, "GPU": False, "preinstalled_libraries": {}, "available_models": {}},
}
# A valid body per JSON operation: hostile values are put into copies of it.
TEMPLATES: dict[tuple[str, str], Any] = {
    ("POST", "/model"): {"model_name": "n", "model_version": "v", "meta": {"library": "x", "k": [1, {"a": "b"}]}},
    ("PUT", "/model/meta/{model_name}/{model_version}"): {"library": "x", "description": "d", "extra": {"a": 1}},
    ("POST", "/training-results"): {
        "model_name": "m",
        "model_version": "v1",
        "training_id": "r2",
        "configuration_id": "1",
        "results": {"loss": 0.5, "rounds": "3", "ok": True},
    },
    ("POST", "/strategy"): {"strategy_name": "s2", "strategy_description": "d", "meta": {"a": [1, 2]}},
    ("PUT", "/strategy/meta/{strategy_name}"): {"meta": {"a": {"b": 1}}, "strategy_description": "d"},
    ("POST", "/transformation"): {**TRANSFORMATION, "id": "t.y"},
    ("PUT", "/transformation/meta/{transformation_id}"): TRANSFORMATION,
    ("POST", "/tasks"): {
        "task_id": "t2",
        "model": {"model_name": "m", "model_version": "v1"},
        "strategy": {"strategy_name": "s"},
        "strategy_conf": {"fraction_fit": 1.0},
        "transformations": [{"id": "t.x", "parameters": {"k": 2}}],
        "rounds": 3,
        "min_participants": 2,
        "participants_ratio": 0.5,
        "round_timeout": 60,
        "training": {"epochs": 1, "batch_size": 8, "learning_rate": 0.1},
    },
    ("PUT", "/tasks/{task_id}/status"): {
        "current_round": 1,
        "participants": [{"node_id": "n1", "samples": 3, "metrics": {"acc": 0.5}}],
        "round": {"round": 1, "loss": 0.5, "metrics": {"acc": 0.5}, "duration_s": 1.0},
        "message": "m",
    },
}
DOWNLOADS = {
    "/model/{model_name}/{model_version}",
    "/strategy/{strategy_name}",
    "/transformation/{transformation_id}",
    "/training-results/weights/{model_name}/{model_version}/{training_id}",
}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    spec = create_app(Settings()).openapi()
    found = [(method.upper(), path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]
    # HEAD is served for every download but not listed in the document.
    found += [("HEAD", path, op) for method, path, op in list(found) if method == "GET" and path in DOWNLOADS]
    return sorted(found, key=lambda item: (item[1], item[0]))


OPERATIONS = _operations()

# --- hostile shapes -------------------------------------------------------------------------------

controls = st.characters(min_codepoint=0, max_codepoint=0x9F).filter(lambda c: ord(c) < 32 or ord(c) >= 127)
formats = st.characters(categories=["Cf"])
surrogates = st.integers(0xD800, 0xDFFF).map(chr)
hostile_text = st.one_of(
    st.sampled_from(["..", ".", "$where", "a.b", "\u202egnp.exe", "\ufeff", "zero\u200bwidth", "x" * 200]),
    st.lists(st.one_of(controls, formats, surrogates, st.characters()), min_size=1, max_size=12).map("".join),
)
# JSON text fragments (not values: most of these have no JSON encoding a well-behaved encoder would write).
huge_integers = st.integers(19, 5000).flatmap(lambda n: st.sampled_from(["9" * n, "-" + "9" * n, "1" + "0" * n]))
json_fragments = st.one_of(
    huge_integers,
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999", str(2**63), str(-(2**63) - 1), "1e-400"]),
    surrogates.map(lambda c: f'"\\u{ord(c):04x}"'),
    hostile_text.map(lambda t: json.dumps(t)),  # valid JSON escapes of controls, format characters, surrogates
    st.integers(20, 2000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 40).map(lambda n: '{"a":' * n + "1" + "}" * n),
)


def _url_segment(text: str) -> str:
    # Surrogates as the bytes a broken encoder would send (not valid UTF-8).
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _header_value(text: str) -> bytes:
    """`text` as raw header bytes, minus what no HTTP client can send (ASCII controls, edge whitespace):
    format characters and broken UTF-8 stay."""
    raw = bytes(b for b in text.encode("utf-8", "surrogatepass") if b >= 0x20 and b != 0x7F).strip(b" ")
    return raw or b"x"


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place a hostile value can go: each leaf, and a new key in each object."""
    places = [path] if path else []
    if isinstance(value, dict):
        places.append((*path, "__new__"))
        for key, item in value.items():
            places += _leaves(item, (*path, key))
    elif isinstance(value, list):
        for n, item in enumerate(value):
            places += _leaves(item, (*path, n))
    return places


MARK = "__HOSTILE_VALUE__"


def _body_with(template: Any, place: tuple[Any, ...], fragment: str, hostile_key: str | None) -> bytes:
    body = json.loads(json.dumps(template))
    holder = body
    for part in place[:-1]:
        holder = holder[part]
    last = place[-1]
    if last == "__new__":
        holder[hostile_key if hostile_key is not None else "k"] = MARK
    else:
        holder[last] = MARK
    return json.dumps(body).replace(json.dumps(MARK), fragment).encode()


# --- the test ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, mongo_url):
    """One live server with an item of every kind (module scope: state carries over between examples)."""
    from tests.helpers import LiveServer, drop, make_settings

    app_settings = make_settings(mongo_url)
    with LiveServer(create_app(app_settings)) as live, httpx.Client(base_url=live.url, timeout=30) as c:
        assert c.post("/model", json={"model_name": "m", "model_version": "v1", "meta": {"library": "x"}}).is_success
        assert c.put("/model/m/v1", content=b"0123456789" * 100).status_code == 204
        assert c.post("/strategy", json={"strategy_name": "s"}).is_success
        assert c.put("/strategy/s", content=b"strategy").status_code == 204
        assert c.post("/transformation", json=TRANSFORMATION).is_success
        assert c.put("/transformation/t.x", content=b"transformation").status_code == 204
        result = {**TEMPLATES[("POST", "/training-results")], "training_id": "r1"}
        assert c.post("/training-results", json=result).is_success
        assert c.put("/training-results/m/v1/r1/1", content=b"weights").status_code == 204
        plan = {**TEMPLATES[("POST", "/tasks")], "task_id": "t1"}
        assert c.post("/tasks", json=plan).is_success
        assert c.put("/tasks/t1/status", json={"phase": "Running"}).is_success
        tus = {"Tus-Resumable": "1.0.0", "Upload-Length": str(10**6), "Upload-Metadata": "target L21vZGVsL20vdjE="}
        created = c.post("/uploads", headers=tus)  # target /model/m/v1
        assert created.status_code == 201, created.text
        VALID_PATH["upload_id"] = created.headers["location"].rsplit("/", 1)[1]
        yield live.url
    drop(app_settings)


def _record(method: str, path: str, statuses: Counter[int]) -> None:
    if REPORT:
        with open(REPORT, "a") as out:
            out.write(json.dumps({"operation": f"{method} {path}", "statuses": statuses}) + "\n")


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_no_hostile_value_gets_a_5xx(server, method, path, op):
    statuses: Counter[int] = Counter()
    params = [p for p in op.get("parameters", []) if p["in"] in ("path", "query", "header")]
    content = op.get("requestBody", {}).get("content", {})
    template = TEMPLATES.get((method, path))
    if template is None and "application/json" in content:
        template = {}
    places = _leaves(template) if template is not None else []
    uploads = "application/octet-stream" in content or "application/offset+octet-stream" in content

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=SEED is None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def send(data: st.DataObject) -> None:
        url = path
        query: list[str] = []
        headers: dict[str, bytes] = {}
        if path.startswith("/uploads"):
            headers["Tus-Resumable"] = b"1.0.0"
        for param in params:
            name = param["name"]
            if param["in"] == "header":  # tus headers: hostile values, or none
                if data.draw(st.booleans(), label=f"send {name}"):
                    value = data.draw(st.one_of(hostile_text, huge_integers, st.just("0")), label=name)
                    headers[name] = _header_value(value)
                continue
            # Deletes get hostile names only: the fixture's items stay for the other operations.
            valid = name in VALID_PATH and method != "DELETE" and data.draw(st.booleans(), label=f"valid {name}")
            if param["in"] == "path":
                text = VALID_PATH[name] if valid else data.draw(hostile_text, label=name)
                url = url.replace("{" + name + "}", _url_segment(text))
            elif data.draw(st.booleans(), label=f"send {name}"):
                value = data.draw(st.one_of(hostile_text, huge_integers), label=name)
                query.append(f"{quote(name)}={_url_segment(value)}")
        body: bytes | None = None
        if method in ("GET", "HEAD") and path in DOWNLOADS and data.draw(st.booleans(), label="range"):
            position = st.one_of(st.just(""), huge_integers, st.integers(0, 2000).map(str))
            first, last = data.draw(st.tuples(position, position), label="range")
            headers["Range"] = f"bytes={first}-{last}".encode()
        if places and template is not None:
            place = data.draw(st.sampled_from(places), label="where")
            fragment = data.draw(json_fragments, label="value")
            key = data.draw(st.one_of(st.none(), hostile_text), label="key") if place[-1] == "__new__" else None
            body = _body_with(template, place, fragment, key)
            headers["Content-Type"] = b"application/json"
        elif uploads:
            body = b"file bytes"
            if "application/offset+octet-stream" in content:
                headers["Content-Type"] = b"application/offset+octet-stream"
            headers["X-Filename"] = _header_value(data.draw(hostile_text, label="x-filename"))
        headers["X-Request-ID"] = _header_value(data.draw(hostile_text, label="request id"))
        target = f"{server}{url}" + (f"?{'&'.join(query)}" if query else "")
        with httpx.Client(timeout=30) as client:
            try:
                response = client.request(method, target, content=body, headers=headers)
            except httpx.HTTPError as exc:  # a dropped connection is as bad as a 5xx
                raise AssertionError(f"{method} {target[:300]!r}: no answer ({exc!r})") from exc
        statuses[response.status_code] += 1
        shown = f"{method} {target[:300]!r} body={body!r:.300}"
        assert response.status_code < 500, f"{shown} → {response.status_code} {response.text[:300]}"

    if SEED is not None:
        send = seed(int(SEED))(send)
    send()
    _record(method, path, statuses)
    assert sum(statuses.values()) >= 1


def test_every_operation_of_the_document_is_covered():
    paths = {(m, p) for m, p, _ in OPERATIONS}
    assert len(paths) == len(OPERATIONS) >= 40
    assert {("HEAD", p) for p in DOWNLOADS} <= paths

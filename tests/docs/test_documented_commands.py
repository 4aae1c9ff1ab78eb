"""Documentation is code: every shell and Python block of README.md and docs/*.md runs here, against a
repository of its own (`flrepo serve` on the test database), or carries a marker saying why it cannot
(the markers are described in tests/docs/blocks.py and docs/CONTRIBUTING.md).

Each document's blocks run in order in one scratch directory holding the files the examples name
(model.h5, weights.npz, strategy.pkl, site-a.csv, ...), so a block may use what an earlier one made.
The test fills these placeholders: the documented address (`127.0.0.1:9013`, `localhost:9013`, a
remote `edge:9013`) becomes the test repository's; `<sha256>` the sha256 of model.h5; `api_key="..."`
and `Bearer KEY` an admin key; a collector's `0.0.0.0:8080` and `COLLECTOR:8080` a free loopback port.

A block fails when a command fails (a command whose exit status the block reads itself, `$?`, may
fail), when curl gets a 5xx or no answer, or when it gets a 4xx its line's comment does not name
(`# 204, or 412`); a Python block fails on a non-zero exit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from flrepo.server.embedded import api_server, free_port
from tests.docs.blocks import DOCUMENTS, NOT_CODE, PYTHON, ROOT, Block, blocks, console_commands

BIN = Path(sys.executable).parent
_CURL_LINE = re.compile(r"^DOCCURL (\d{3}) (\S+)$", re.M)
_FAILED = re.compile(r"^DOCFAIL (\d+) (\d+)$", re.M)
_CURL_CALL = re.compile(r"(?:^|[\s;(|&])curl\s")
_PRELUDE = "trap 'echo \"DOCFAIL $LINENO $?\" >&2' ERR\n"
# Seconds one block may take: the PyTorch walk-through trains three rounds on three sites.
BLOCK_TIMEOUT = 900


class Repository:
    """`flrepo serve` on a database of its own, with the scratch directory and environment the blocks see."""

    def __init__(self, stack: ExitStack, mongo_url: str, scratch: Path) -> None:
        names = {"FLREPO_DB_NAME": f"docs_{uuid.uuid4().hex[:12]}"}
        names["FLREPO_GRIDFS_DB_NAME"] = names["FLREPO_DB_NAME"] + "_grid"
        workdir = scratch.parent / f"server-{uuid.uuid4().hex[:6]}"
        workdir.mkdir()
        # Auth on, as deployed, with an admin key for the examples that send one (`api_key="..."`); the
        # curl tour sends none, as against `make run`: anonymous requests are admin too.
        keys = workdir / "api-keys.yaml"
        made = subprocess.run(
            [BIN / "flrepo", "keys", "create", "--role", "admin", "--id", "docs", "--file", str(keys)],
            capture_output=True,
            text=True,
            check=True,
        )
        self.key = made.stdout.split()[1]
        auth = {"FLREPO_API_KEYS_FILE": str(keys), "FLREPO_ANONYMOUS_ROLE": "admin"}
        self.url, _ = stack.enter_context(api_server(workdir, mongo_url, **names, **auth))
        self.address = self.url.removeprefix("http://")
        # What `flrepo migrate`, `dump` and `restore` read: the repository's own database.
        self.database = {"FLREPO_MONGODB_URL": mongo_url, **names}


def _scratch_files(scratch: Path) -> None:
    """The files the documented commands name, small and valid where a command reads them."""
    import numpy as np

    from flrepo.fl.demo import write_initial, write_partitions

    for name in ("model.h5", "new.h5", "transformation.pkl", "model.bin"):
        (scratch / name).write_bytes(os.urandom(2048))
    for name in ("strategy.pkl", "fedavg.pkl"):
        (scratch / name).write_bytes(pickle.dumps({"placeholder": name}))
    buffer = io.BytesIO()
    np.savez(buffer, w=np.zeros(3))
    (scratch / "weights.npz").write_bytes(buffer.getvalue())
    write_initial("numpy", scratch / "initial.npz")
    write_initial("pytorch", scratch / "model.pt2")
    transformation = {
        "id": "application.tests.categorical_transformation",
        "description": "The class transforming y data into categorical data",
        "parameter_types": {"categories": "int"},
        "default_values": {"categories": 10},
        "outputs": ["np.ndarray", "np.ndarray"],
        "needs": {"storage": 0, "RAM": 0, "GPU": False, "preinstalled_libraries": {}, "available_models": {}},
    }
    (scratch / "transformation.json").write_text(json.dumps(transformation))
    for site, written in zip("abc", write_partitions(scratch, 3), strict=True):
        Path(written).rename(scratch / f"site-{site}.csv")


def _environment(scratch: Path, repo: Repository) -> dict[str, str]:
    home = scratch / ".home"
    home.mkdir(exist_ok=True)
    # curl reads ~/.curlrc: every status goes to stderr, where the test reads it.
    curlrc = 'silent\nshow-error\nwrite-out = "%{stderr}DOCCURL %{http_code} %{url_effective}\\n"\n'
    (home / ".curlrc").write_text(curlrc)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLREPO_", "FLWR_"))}
    env.update(
        HOME=str(home),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        FLREPO_URL=repo.url,
        R=repo.url,
        FLWR_TELEMETRY_ENABLED="0",
        GRPC_VERBOSITY="ERROR",
        FLREPO_LOG_LEVEL="WARNING",
        **repo.database,
    )
    signing = scratch / "docs.key"
    if not signing.exists():
        subprocess.run(
            [BIN / "flrepo", "keys", "signing-create", "--id", "docs"],
            cwd=scratch,
            env=env,
            check=True,
            capture_output=True,
        )
    env["FLREPO_SIGNING_KEY_FILE"] = str(signing)
    return env


def _filled(text: str, scratch: Path, repo: Repository, collector: str) -> str:
    for documented in ("127.0.0.1:9013", "localhost:9013", "edge:9013"):
        text = text.replace(documented, repo.address)
    text = text.replace("<sha256>", hashlib.sha256((scratch / "model.h5").read_bytes()).hexdigest())
    text = text.replace('api_key="..."', f'api_key="{repo.key}"').replace("Bearer KEY", f"Bearer {repo.key}")
    for documented in ("0.0.0.0:8080", "COLLECTOR:8080"):
        text = text.replace(documented, collector)
    return text


def _allowed_codes(script: str) -> list[set[str]]:
    """For each curl call of `script`, in order, the status codes its comment names."""
    lines = script.splitlines()
    starts = [i for i, line in enumerate(lines) if _CURL_CALL.search(line) and not line.lstrip().startswith("#")]
    allowed = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        comments = " ".join(line.split(" #", 1)[1] for line in lines[start:end] if " #" in line)
        allowed.append(set(re.findall(r"\b([1-5]\d\d)\b", comments)))
    return allowed


def _run_shell(block: Block, script: str, scratch: Path, env: dict[str, str]) -> list[str]:
    """Run a shell block; the problems found (empty: it ran as documented)."""
    cwd = ROOT if block.marker == "checkout" else scratch
    if block.marker == "checkout":  # make finds the shared dependency set under the real HOME
        env = {**env, "HOME": os.environ.get("HOME", str(Path.home()))}
    done = subprocess.run(
        ["bash", "-c", _PRELUDE + script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=BLOCK_TIMEOUT,
    )
    problems = []
    lines = script.splitlines()
    for line_no, status in _FAILED.findall(done.stderr):
        text = lines[int(line_no) - 2] if 0 < int(line_no) - 1 <= len(lines) else "?"
        if "$?" not in text:
            problems.append(f"line {int(line_no) - 1} exited {status}: {text.strip()}")
    statuses = _CURL_LINE.findall(done.stderr)
    allowed = _allowed_codes(script)
    if len(statuses) != len(allowed):
        problems.append(f"{len(allowed)} curl commands in the block, {len(statuses)} ran")
    for (status, url), codes in zip(statuses, allowed, strict=False):
        if status == "000" or status.startswith("5") or (status.startswith("4") and status not in codes):
            problems.append(f"curl {url} answered {status} (the comment allows {sorted(codes) or 'no 4xx'})")
    if problems:
        problems.append(f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-4000:]}")
    return problems


def _run_python(block: Block, script: str, scratch: Path, env: dict[str, str]) -> list[str]:
    path = scratch / f"block_{block.line}.py"
    path.write_text(script)
    done = subprocess.run(
        [sys.executable, path.name],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=BLOCK_TIMEOUT,
    )
    return [] if done.returncode == 0 else [f"exit {done.returncode}: {done.stderr[-4000:]}"]


def _catalogue(scratch: Path, env: dict[str, str], repo: Repository) -> None:
    """The signed catalogue (strategies, transformations) and model digits v1 with its file."""
    subprocess.run([BIN / "flrepo", "seed"], cwd=scratch, env=env, check=True, capture_output=True)
    subprocess.run(
        [BIN / "flrepo", "models", "upload", "digits", "v1", "initial.npz", "--create", "--library", "numpy"],
        cwd=scratch,
        env=env,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "scratch"
    directory.mkdir()
    _scratch_files(directory)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _code_blocks(document: Path) -> list[Block]:
    return [block for block in blocks(document) if block.is_code]


def test_every_fence_names_its_language_and_every_skip_its_reason():
    for document in DOCUMENTS:
        for block in blocks(document):
            assert block.language, f"{block.where}: name the block's language (`text` for output)"
            assert block.is_code or block.language in NOT_CODE, (
                f"{block.where}: `{block.language}` is neither run nor known as output or data ({sorted(NOT_CODE)})"
            )
            if block.marker == "skip":
                assert len(block.argument) >= 8, f"{block.where}: say why the block cannot run"
            if block.marker == "setup":
                assert block.argument in ("catalogue",), f"{block.where}: unknown setup {block.argument!r}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_documented_commands_run(document: Path, mongo_url: str, scratch: Path, report_count) -> None:
    code = _code_blocks(document)
    ran, skipped, failures = 0, 0, []
    collector = f"127.0.0.1:{free_port()}"
    with ExitStack() as stack:
        repo, env = None, {}
        for block in code:
            if block.marker == "skip":
                skipped += 1
                continue
            # A repository once a block runs (a document with none starts no `flrepo serve`), a new one for `fresh`.
            if repo is None or block.marker == "fresh":
                repo = Repository(stack, mongo_url, scratch)
                env = _environment(scratch, repo)
            if block.marker == "setup" and block.argument == "catalogue":
                _catalogue(scratch, env, repo)
            text = console_commands(block.text) if block.language == "console" else block.text
            script = _filled(text, scratch, repo, collector)
            run = _run_python if block.language in PYTHON else _run_shell
            problems = run(block, script, scratch, env)
            ran += 1
            if problems:
                failures.append(f"{block.where} ({block.language}):\n  " + "\n  ".join(problems))
    counted = f"{document.relative_to(ROOT)}: {ran} blocks run, {skipped} marked not runnable, {len(code)} in all"
    print(counted)
    report_count(counted)
    assert not failures, "\n\n".join(failures)


def test_the_runner_reports_failed_commands_and_unexpected_answers(tmp_path: Path) -> None:
    """The checks the documents rely on can fail: a failing command, an answer nobody expects."""
    home = tmp_path / ".home"
    home.mkdir()
    (home / ".curlrc").write_text(
        'silent\nshow-error\nwrite-out = "%{stderr}DOCCURL %{http_code} %{url_effective}\\n"\n'
    )
    env = {**os.environ, "HOME": str(home)}
    block = Block(tmp_path / "x.md", 1, "bash", "")
    failed = _run_shell(block, "true\nfalse\n", tmp_path, env)
    assert failed[0] == "line 2 exited 1: false"
    assert _run_shell(block, 'false; echo "exit $?"\n', tmp_path, env) == []  # the block reads the status itself
    closed = f"http://127.0.0.1:{free_port()}/health"
    unanswered = _run_shell(block, f"curl {closed}   # 404 would be fine\n", tmp_path, env)
    assert any(f"curl {closed} answered 000" in problem for problem in unanswered)
    assert _allowed_codes("curl a \\\n  -d x   # 204, or 412\ncurl b\n") == [{"204", "412"}, set()]

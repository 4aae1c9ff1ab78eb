"""The core install (`pip install flrepo`: SDK + CLI on httpx, pydantic, rich, shtab) works on its own.

Offline: the wheel is built from a copy of the sources with the test environment's setuptools, and
a fresh venv sees only the core dependencies, borrowed from the test environment (their top-level
files, linked into a directory that a .pth file adds to the venv's path) instead of a package index.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from flrepo.cli.exit_codes import OK, USAGE

ROOT = Path(__file__).resolve().parents[2]
CORE = {"httpx", "pydantic", "rich", "shtab"}
# The project files a wheel is built from (setuptools finds the packages under app/).
SOURCES = ("pyproject.toml", "README.md", "app")


@dataclass
class CoreVenv:
    python: Path
    flrepo: Path
    site_packages: Path
    env: dict[str, str]

    def run(self, *args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(arg) for arg in args], capture_output=True, text=True, cwd=cwd, env={**self.env, **env}, timeout=300
        )


def _check(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"{done.args}\n{done.stdout}\n{done.stderr}"
    return done


def core_distributions() -> dict[str, importlib.metadata.Distribution]:
    """httpx, pydantic, rich, shtab and everything they require here (markers evaluated, no extras)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = sorted(CORE)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        found[name] = dist = importlib.metadata.distribution(name)
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def link_top_level_files(dists: dict[str, importlib.metadata.Distribution], into: Path) -> None:
    """Each distribution's top-level packages, modules and dist-info, as symlinks in `into`."""
    into.mkdir()
    for name, dist in dists.items():
        assert dist.files, f"{name} has no RECORD"
        for top in sorted({file.parts[0] for file in dist.files} - {"..", "__pycache__"}):
            target = into / top
            assert not target.exists(), f"{top} is in two core distributions"
            target.symlink_to(Path(str(dist.locate_file(top))).resolve())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A copy, so no build/ or egg-info lands in the work tree and nothing stale from one is packed.
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("wheel")
    offline = ["--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check"]
    build = [sys.executable, "-m", "pip", "wheel", *offline, "-w", str(out), str(source)]
    _check(subprocess.run(build, capture_output=True, text=True, timeout=300))
    (built,) = out.glob("flrepo-*.whl")
    return built


@pytest.fixture(scope="module")
def core_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> CoreVenv:
    base = tmp_path_factory.mktemp("core")
    venv = base / "venv"
    _check(subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300))
    python = venv / "bin" / "python"
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", str(base)),
        "PYTHONNOUSERSITE": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }  # and nothing else: no PYTHONPATH, no FLREPO_URL from the test run
    purelib = [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    site_packages = Path(_check(subprocess.run(purelib, capture_output=True, text=True, env=env)).stdout.strip())
    deps = base / "core-deps"
    link_top_level_files(core_distributions(), deps)
    (site_packages / "flrepo-core-deps.pth").write_text(f"{deps}\n")
    install = [python, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)]
    _check(subprocess.run(install, capture_output=True, text=True, env=env, timeout=300))
    return CoreVenv(python, venv / "bin" / "flrepo", site_packages, env)


def test_the_wheel_holds_only_the_flrepo_package(wheel):
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    name_version = "-".join(wheel.name.split("-")[:2])  # flrepo-0.1.0-py3-none-any.whl
    assert tops == {"flrepo", f"{name_version}.dist-info"}


def test_the_wheel_ships_the_web_console(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    console = ROOT / "app" / "flrepo" / "server" / "ui" / "static"
    shipped = {f"flrepo/server/ui/static/{path.name}" for path in console.iterdir()}
    assert shipped and shipped <= names, sorted(shipped - names)


def test_the_wheel_requires_only_the_core(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = email.parser.Parser().parsestr(archive.read(metadata).decode())
    requirements = [Requirement(text) for text in message.get_all("Requires-Dist") or []]
    assert {canonicalize_name(r.name) for r in requirements if r.marker is None} == CORE


def test_the_sdk_imports_without_the_service_or_flower(core_venv, tmp_path):
    script = """
import importlib.util, json
from flrepo.client import RepositoryClient
import flrepo
print(json.dumps({
    "flrepo": flrepo.__file__,
    "absent": [m for m in ("fastapi", "uvicorn", "pymongo", "prometheus_client", "pydantic_settings", "flwr")
               if importlib.util.find_spec(m) is None],
}))
"""
    found = json.loads(_check(core_venv.run(core_venv.python, "-c", script, cwd=tmp_path)).stdout)
    assert Path(found["flrepo"]).is_relative_to(core_venv.site_packages)  # the wheel, not this work tree
    assert found["absent"] == ["fastapi", "uvicorn", "pymongo", "prometheus_client", "pydantic_settings", "flwr"]


def test_a_users_own_app_package_still_imports(core_venv, tmp_path):
    user = tmp_path / "project"
    (user / "app").mkdir(parents=True)
    (user / "app" / "__init__.py").write_text("")
    (user / "app" / "client.py").write_text("X = 'from the user'\n")
    check = "from app.client import X; from flrepo.client import RepositoryClient; print(X)"
    # The user's folder first on the path (their working directory) ...
    assert _check(core_venv.run(core_venv.python, "-c", check, cwd=user)).stdout == "from the user\n"
    # ... and last, after site-packages: nothing installed there is called `app`.
    last = f"import sys; sys.path.append({str(user)!r}); {check}"
    assert _check(core_venv.run(core_venv.python, "-c", last, cwd=tmp_path)).stdout == "from the user\n"


def test_the_cli_runs_and_names_the_extra_a_command_needs(core_venv, tmp_path):
    assert "models" in _check(core_venv.run(core_venv.flrepo, "--help", cwd=tmp_path)).stdout
    assert "--available" in _check(core_venv.run(core_venv.flrepo, "models", "list", "--help", cwd=tmp_path)).stdout
    serve = core_venv.run(core_venv.flrepo, "serve", cwd=tmp_path)
    assert serve.returncode == USAGE and "Traceback" not in serve.stderr
    assert serve.stderr == "flrepo serve: needs the server extra: pip install 'flrepo[server]'\n"
    completion = _check(core_venv.run(core_venv.flrepo, "completion", "bash", cwd=tmp_path)).stdout
    assert "_shtab_flrepo" in completion and "transformations" in completion


def test_the_cli_lists_models_of_a_live_server(core_venv, live_server, tmp_path):
    created = core_venv.run(
        core_venv.flrepo, "models", "create", "core", "v1", "--library", "numpy", "--url", live_server.url, cwd=tmp_path
    )
    assert created.returncode == OK, created.stderr
    listed = core_venv.run(core_venv.flrepo, "models", "list", "-O", "json", cwd=tmp_path, FLREPO_URL=live_server.url)
    assert listed.returncode == OK, listed.stderr
    assert [(m["model_name"], m["model_version"]) for m in json.loads(listed.stdout)] == [("core", "v1")]

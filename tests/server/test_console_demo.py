"""The web console following a real training in headless Chromium: the demo's digits task (NumPy
model, two local executions) is run by its collector while the task page is open; the round table and
the curves gain points without a reload until the phase is Succeeded, and the published version's
page links back to the task with its lineage. Screenshots of the models page and of the running
task's page go to docs/images/ (README shows them; FLREPO_SCREENSHOTS names another folder)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flrepo.client import RepositoryClient
from flrepo.fl.catalogue import seed
from flrepo.fl.demo import digits_task, fl_env, publisher, register_model, start_training
from flrepo.server.embedded import api_server, reap
from flrepo.server.settings import Settings
from tests.helpers import FlSite, logs_of
from tests.server.console_pages import KEYS, Console, chromium, keys_file

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 6


def screenshots() -> Path:
    folder = Path(os.environ.get("FLREPO_SCREENSHOTS") or ROOT / "docs" / "images")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def keyed_fl(settings: Settings, tmp_path: Path) -> Iterator[FlSite]:
    """An API process with reader, writer and admin keys and the signed catalogue; the FL processes use
    the admin key, and the service trusts the publisher's key (the console shows signatures verified)."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    keyring, trusted = publisher("test")
    env = {
        "FLREPO_DB_NAME": settings.db_name,
        "FLREPO_GRIDFS_DB_NAME": settings.gridfs_db_name,
        "FLREPO_API_KEYS_FILE": str(keys_file(tmp_path)),
        "FLREPO_TRUSTED_KEYS": trusted,
    }
    with api_server(tmp_path, settings.mongodb_url, **env) as (url, _):
        with RepositoryClient(url, api_key=KEYS["admin"], keyring=keyring) as repo:
            seed(repo)
            yield FlSite(repo, url, {**fl_env(url, trusted), "FLREPO_API_KEY": KEYS["admin"]}, tmp_path)


def rows(console: Console) -> int:
    return int(console.page.locator("#rounds-table tbody tr").count())


def curve_points(console: Console, chart: str) -> int:
    found = console.page.get_attribute(f"[data-chart={chart}] g.series[data-series=aggregated]", "data-points")
    return int(found or 0)


def test_the_task_page_follows_a_demo_training_live_and_links_its_published_model(keyed_fl, tmp_path):
    fl = keyed_fl
    register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    # Far more local epochs than the demo's: rounds of a second or more on a quiet machine (at 60 epochs a
    # quiet machine ran all six between two of the page's polls), long enough to watch them arrive.
    training = {"epochs": 600, "batch_size": 32, "learning_rate": 0.1}
    fl.repo.create_task(digits_task("ui-demo", rounds=ROUNDS, clients=2, training=training))
    with chromium() as context:
        console = Console(context.new_page(), fl.url)
        console.open("/tasks/ui-demo", poll_ms=300)
        console.sign_in(KEYS["writer"])
        console.rendered()
        assert console.page.get_attribute("main", "data-phase") == "Pending"
        assert console.page.locator("#cancel").is_visible()  # a writer may cancel
        console.page.evaluate("window.sameDocument = true")  # gone if the page reloads
        # Every round written as it ends: this is about the page following the rounds the task shows. A
        # collector's default pacing (flrepo.fl.core.round_writes) may hold quick rounds for a few seconds
        # on a loaded machine, and a paced run of six such rounds can show them all at its end.
        unpaced = {**fl.env, "FLREPO_ROUND_WRITE_SHARE": "1"}
        collector, workers = start_training(fl.url, "ui-demo", ["digits:1/2", "digits:2/2"], unpaced, fl.logs)
        try:
            console.page.wait_for_selector("#rounds-table tbody tr", timeout=180_000)
            first_rows, first_points = rows(console), curve_points(console, "loss")
            # The screenshot once the curves have a few points, while it runs.
            console.page.wait_for_selector("tr[data-round='3'], main[data-phase=Succeeded]", timeout=180_000)
            running = console.page.get_attribute("main", "data-phase") == "Running"
            console.page.screenshot(path=str(screenshots() / "console-task.png"), full_page=True)
            console.page.wait_for_selector("main[data-phase=Succeeded]", timeout=300_000)
        except Exception:
            print(logs_of(fl.logs))
            raise
        finally:
            reap([collector, *workers], timeout=30)
        assert console.page.evaluate("window.sameDocument") is True, "the page was reloaded"
        assert first_rows < ROUNDS and first_points < ROUNDS, (first_rows, first_points)
        assert running, "the task ended before its page showed three rounds"
        assert rows(console) == ROUNDS
        assert curve_points(console, "loss") == ROUNDS and curve_points(console, "accuracy") == ROUNDS
        assert console.page.locator("[data-chart=loss] g.series").count() >= 2  # per site as well
        assert console.page.locator("#cancel").count() == 0  # nothing left to cancel
        assert console.page.locator("#checkpoints-table tr.best").count() == 1
        assert console.leaks() == []

        # The published version's page: lineage, and a link back to the task.
        console.page.click("#published-link")
        console.page.wait_for_selector("#lineage-task", timeout=20_000)
        lineage = console.page.inner_text("#lineage")
        assert "Trained from\nv1" in lineage and f"Rounds\n{ROUNDS}" in lineage
        assert "Strategy\nfedavg" in lineage and "Final accuracy" in lineage
        console.page.screenshot(path=str(screenshots() / "console-version.png"), full_page=True)
        with console.page.expect_download(timeout=30_000) as fetched:
            console.page.click("#download")  # with the key in its header: a plain link could not send it
        saved = tmp_path / "downloaded.npz"
        fetched.value.save_as(saved)
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == fl.repo.get_model("digits", "v1-ui-demo").sha256
        console.page.click("#lineage-task")
        console.page.wait_for_selector("main[data-phase=Succeeded]", timeout=20_000)
        assert console.page.evaluate("location.hash") == "#/tasks/ui-demo"

        console.open("/models")
        console.page.wait_for_selector("#models-table", timeout=20_000)
        assert console.page.locator("#models-table a[href='#/tasks/ui-demo']").count() == 1
        console.page.screenshot(path=str(screenshots() / "console-models.png"), full_page=True)
        console.open("/code")
        console.page.wait_for_selector("main[data-pins=loaded] #strategy-table", timeout=20_000)
        fedavg = console.page.inner_text("#strategy-table tr[data-name=fedavg]")
        assert "verified · key test" in fedavg and "ui-demo" in fedavg and "pins this file" in fedavg
        console.page.screenshot(path=str(screenshots() / "console-code.png"), full_page=True)
        assert console.outside() == []
    published = fl.repo.get_model("digits", "v1-ui-demo").meta or {}
    assert published["task_id"] == "ui-demo" and published["strategy"] == "fedavg"
    assert published["published_round"] == ROUNDS and "accuracy" in published["final_metrics"]

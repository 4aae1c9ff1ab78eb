"""aerOS FL Repository 1.1.0's own unit tests, unchanged, against flrepo (tests/data/aeros/README.md).

Each of its two test files runs in its own pytest process over a fresh database pair served by a live
flrepo, through the harness plugin in tests/data/aeros/harness. Every test that passes on aerOS 1.1.0
itself (AEROS_PASSES, measured with aerOS's pinned requirements) must pass here, except the intentional
differences, which must fail for exactly their documented reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from flrepo.server.main import create_app
from flrepo.server.settings import Settings
from tests.helpers import LiveServer

AEROS = Path(__file__).resolve().parents[1] / "data" / "aeros"

# Passing on aerOS 1.1.0 itself, each file in its own process (FastAPI 0.83, pydantic 1.10.2, mongomock 4.1.2).
AEROS_PASSES = {
    "model_and_results_tests.py": {
        "test_list_all_base_models_in_database",
        "test_list_all_base_models_that_have_been_trained",
        "test_create_base_model",
        "test_create_base_model_already_present",
        "test_update_model_base_present",
        "test_update_model_base_absent",
        "test_update_model_base_metadata_unavailable",
        "test_download_a_model_base",
        "test_delete_model_base",
        "test_delete_nonexistent_model_base",
        "test_list_all_training_results_existing_for_a_model_base",
        "test_list_all_training_results_existing_for_a_model_base_empty",
        "test_create_training_results",
        "test_create_training_results_present",
        "test_delete_training_results",
    },
    "strategy_tests.py": {
        "test_list_all_strategies_in_database",
        "test_create_strategy_present",
        "test_update_strategy_base_present",
        "test_update_strategy_base_absent",
        "test_update_strategy_metadata",
        "test_update_strategy_metadata_unavailable",
        "test_download_a_strategy_base",
        "test_delete_strategy",
        "test_delete_nonexistent_strategy",
    },
}
# Intentional differences: the test, and the text its failure must show.
INTENTIONAL = {
    # A duplicate is a conflict: 409, where aerOS answered 400.
    "test_create_base_model_already_present": "assert 409 == 400",
    "test_create_training_results_present": "assert 409 == 400",
    "test_create_strategy_present": "assert 409 == 400",
}
# Failing on aerOS 1.1.0 and on flrepo alike, for the same reason: the weights endpoint answers them
# base64-encoded (aerOS's GUI decodes that answer, so flrepo keeps it; `?encoding=raw` gives the file).
FAILS_AS_ON_AEROS = {
    "test_download_weights_that_were_the_result_of_a_given_training": (
        "('../data/temp.pkl', '../data/temp2.pkl', shallow=False)"
    ),
}


def _outcomes(junit: Path) -> dict[str, str]:
    """test name -> "passed", or the failure's message."""
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        outcomes[case.attrib["name"]] = "passed" if problem is None else problem.attrib.get("message", "failed")
    return outcomes


def run_aeros_tests(test_file: str, settings: Settings, url: str, work: Path, python: str = sys.executable) -> dict:
    """Run one of aerOS's test files against the flrepo at `url` (serving `settings`' databases)."""
    # A copy: the tests write next to their data (../data/temp2.zip) and must find it at that path.
    tree = work / "aeros"
    shutil.copytree(AEROS / "application", tree / "application")
    (tree / "pytest.ini").write_text("[pytest]\n")
    junit = work / "junit.xml"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), str(AEROS / "harness")]),
        "AEROS_HARNESS_URL": url,
        "AEROS_HARNESS_MONGODB_URL": settings.mongodb_url,
        "AEROS_HARNESS_DB": settings.db_name,
        "AEROS_HARNESS_GRID_DB": settings.gridfs_db_name,
    }
    cmd = [python, "-m", "pytest", "-p", "aeros_harness", "-p", "no:cacheprovider", "--noconftest"]
    cmd += ["-c", str(tree / "pytest.ini"), "--rootdir", str(tree), f"--junitxml={junit}", "-q", test_file]
    done = subprocess.run(
        cmd,
        cwd=tree / "application" / "tests" / "unit_tests",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert junit.exists(), done.stdout + done.stderr
    return _outcomes(junit)


@pytest.mark.parametrize("test_file", sorted(AEROS_PASSES))
def test_aeros_unit_tests_pass_on_flrepo(settings: Settings, tmp_path: Path, test_file: str):
    with LiveServer(create_app(settings)) as server:
        outcomes = run_aeros_tests(test_file, settings, server.url, tmp_path)
    assert AEROS_PASSES[test_file] <= set(outcomes), "a test of aerOS's was not run"
    for name in sorted(AEROS_PASSES[test_file]):
        if name in INTENTIONAL:
            assert INTENTIONAL[name] in outcomes[name], (name, outcomes[name])
        else:
            assert outcomes[name] == "passed", (name, outcomes[name])
    for name in FAILS_AS_ON_AEROS.keys() & set(outcomes):
        # The saved file differs from the uploaded one: it holds the base64 text.
        assert FAILS_AS_ON_AEROS[name] in outcomes[name], (name, outcomes[name])

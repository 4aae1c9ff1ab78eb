"""`flrepo demo` gives a new user Flower's Message API: `message-fedavg` by default, over TLS with
SuperNode authentication (a throw-away CA, one key per site); a legacy strategy runs as aerOS did."""

from __future__ import annotations

from flrepo.fl.demo import digits_task, secured
from flrepo.fl.message.participant import public_key


def test_a_message_api_demo_task_admits_only_its_sites_over_tls(tmp_path):
    plan, collector, sites = secured(digits_task("d", "message-fedavg", clients=3), tmp_path)
    assert collector[0] == "--tls-dir" and {p.name for p in (tmp_path / "tls").iterdir()} == {
        "ca.crt",
        "tls.crt",
        "tls.key",
    }
    assert len(sites) == 3 and all(options[0] == "--participant-key" for options in sites)
    # Each site's key is the one the task admits.
    admitted = [" ".join(line.split()[:2]) for line in plan["participant_keys"]]
    assert admitted == [public_key(tmp_path / f"site-{k}.key") for k in (1, 2, 3)]


def test_a_legacy_demo_task_is_left_as_aeros_runs_it(tmp_path):
    plan = digits_task("d", "fedavg", clients=3)
    assert secured(plan, tmp_path) == (plan, [], [])


def test_the_demo_runs_the_message_api_unless_told_otherwise():
    from flrepo.cli.main import build_parser

    assert build_parser().parse_args(["demo"]).strategy == "message-fedavg"

"""`flrepo tasks create --spec`: refused fields are listed one per line, with the field probably meant."""

from __future__ import annotations

import io
import json

import pytest

from flrepo.cli.exit_codes import OK, USAGE
from flrepo.cli.output import error_text
from flrepo.client import Invalid, RepositoryClient


def _spec(tmp_path, **more) -> str:
    plan = {"model": {"model_name": "m", "model_version": "v1"}, "strategy": {"strategy_name": "fedavg"}, **more}
    path = tmp_path / "task.json"
    path.write_text(json.dumps(plan))
    return f"@{path}"


def _references(url: str) -> None:
    with RepositoryClient(url) as repo:
        repo.create_model("m", "v1", "numpy")
        repo.create_strategy("fedavg")
        repo.upload_strategy("fedavg", io.BytesIO(b"pickled strategy"), sign=False)


def test_a_spec_with_unknown_fields_prints_each_on_its_own_line(flrepo, live_server, tmp_path):
    _references(live_server.url)
    spec = _spec(tmp_path, round_timout=5, min_participant=2, quantization={"bits": 8}, training={"epocs": 2})
    code, out, err = flrepo("tasks", "create", "job-1", "--spec", spec)
    assert code == USAGE and out == ""
    # (the in-process server's access log may share stderr: the CLI's own lines are read)
    lines = [line for line in err.splitlines() if line.startswith(("flrepo tasks:", "  "))]
    assert lines[0] == "flrepo tasks: refused before sending, 4 problem(s):"
    assert sorted(lines[1:]) == [
        "  min_participant: unknown field 'min_participant'; did you mean 'min_participants'?",
        "  quantization: unknown field 'quantization'",
        "  round_timout: unknown field 'round_timout'; did you mean 'round_timeout'?",
        "  training.epocs: unknown field 'epocs'; did you mean 'epochs'?",
    ]
    assert flrepo("tasks", "list")[1].strip() == "[]"  # nothing was created
    code, out, err = flrepo("tasks", "create", "job-1", "--spec", _spec(tmp_path, round_timeout=5))
    assert code == OK and json.loads(out)["round_timeout"] == 5, err


def test_the_servers_422_is_printed_the_same_way(live_server, tmp_path):
    _references(live_server.url)
    with RepositoryClient(live_server.url) as repo:
        repo.create_task(
            task_id="job-1", model={"model_name": "m", "model_version": "v1"}, strategy={"strategy_name": "fedavg"}
        )
        with pytest.raises(Invalid) as refused:
            repo.update_task_status("job-1", curent_round=1)
    text = error_text("tasks", refused.value).splitlines()
    assert text[0] == "flrepo tasks: the server refused the request (422), 1 problem(s):"
    assert text[1] == "  curent_round: unknown field 'curent_round'; did you mean 'current_round'?"
    assert text[2].startswith("  (request id ")

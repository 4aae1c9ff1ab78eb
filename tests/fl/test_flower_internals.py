"""What flrepo's Message-API runtime relies on inside the pinned flwr (1.42): each test names one
internal that flrepo.fl.message.{executor,supernode,superlink,fast_grid} reaches into, and fails
when a flwr upgrade changes it. Fix the runtime module named in the failure, then this test."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

pytest.importorskip("flwr")


def parameters(function: object) -> set[str]:
    return set(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_supernode_loop_sleeps_3_s_when_idle_and_0_5_s_for_a_reply_through_its_time_global():
    """flrepo.fl.message.supernode.NodeTime replaces exactly these two sleeps (matched by value)."""
    from flwr.supernode import start_client_internal as loop

    from flrepo.fl.message import supernode

    assert loop.time.__name__ == "time", "the SuperNode loop no longer imports the time module as `time`"
    main = inspect.getsource(loop.start_client_internal)
    assert f"time.sleep({supernode.IDLE_SLEEP})" in main
    assert "_push_messages(" in main, "the loop no longer hands a stored message to _push_messages"
    assert f"time.sleep({supernode.REPLY_SLEEP})" in inspect.getsource(loop._push_messages)
    assert main.index("_pull_and_store_message(") < main.index("_push_messages("), "push must follow the store"


def test_the_superexec_loop_gets_its_executor_and_sleeps_through_module_globals():
    """flrepo.fl.message.executor.serve replaces `get_executor` and `time` in this module."""
    from flwr.supercore.superexec import run_superexec as loop

    source = inspect.getsource(loop.run_superexec)
    assert "get_executor(" in source and callable(loop.get_executor)
    assert "time.sleep(task_poll_interval)" in source and loop.time.__name__ == "time"
    assert "plugin.launch_task(" in source and "executor.reconcile()" in source
    assert {
        "runtime_api_address",
        "insecure",
        "root_certificates_path",
        "superexec_auth_secret",
        "parent_pid",
    } <= parameters(loop.run_superexec)
    assert loop._TASK_POLL_INTERVAL_ENV == "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"


def test_the_executor_protocol_and_execution_spec_are_what_the_fork_executor_implements():
    from flwr.supercore.superexec.executor import ExecutionSpec, Executor

    from flrepo.fl.message.executor import ForkExecutor

    protocol = {name for name in vars(Executor) if not name.startswith("_")}
    assert protocol == {"get_eligible_capacity", "wait_for_capacity", "launch", "reconcile", "close"}
    for name in protocol:
        assert parameters(getattr(ForkExecutor, name)) == parameters(getattr(Executor, name)), name
    fields = {f.name for f in dataclasses.fields(ExecutionSpec)}
    assert {
        "task_type",
        "runtime_api_address",
        "token",
        "insecure",
        "root_certificates_path",
        "runtime_dependency_install",
        "parent_pid",
        "suppress_output",
        "task_id",
    } <= fields


def test_the_app_runtimes_take_what_the_forked_children_pass():
    from flwr.superlink.runtime import run_serverapp
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    common = {"runtime_api_address", "token", "insecure", "certificates", "parent_pid", "runtime_dependency_install"}
    assert parameters(run_clientapp) == common
    assert parameters(run_serverapp) == common | {"log_queue"}


def test_flowers_exit_handlers_live_in_a_module_list_a_forked_child_can_clear():
    from flwr.supercore.exit import exit_handler

    assert isinstance(exit_handler.registered_exit_handlers, list)
    assert "registered_exit_handlers" in inspect.getsource(exit_handler.trigger_exit_handlers)


def test_supernode_and_superlink_take_process_isolation_with_a_superexec_secret(tmp_path):
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

    secret = tmp_path / "secret"
    ours = ["--isolation", "process", "--superexec-auth-secret-file", str(secret)]  # appended by the launcher
    given = ["--superlink", "127.0.0.1:1", "--insecure", "--isolation", "subprocess", "--host", "127.0.0.1"]
    args = _parse_args_run_supernode().parse_args([*given, "--port", "9094", *ours])
    assert (args.isolation, args.superexec_auth_secret_file, args.host, args.port) == (
        "process",
        str(secret),
        "127.0.0.1",
        9094,
    )
    from flwr.superlink.cli.flower_superlink import SuperLinkLifespan, _parse_args_run_superlink

    parser = _parse_args_run_superlink()
    options = {option for action in parser._actions for option in action.option_strings}
    assert {"--isolation", "--superexec-auth-secret-file", "--port"} <= options
    assert "superexec_process" in inspect.getsource(SuperLinkLifespan.shutdown)
    # flrepo.fl.message.superlink passes `--isolation process`: Flower then starts no SuperExec of
    # its own (flrepo's runs the ServerApp), and the Runtime API checks the SuperExec secret.
    assert "ISOLATION_MODE_SUBPROCESS" in inspect.getsource(SuperLinkLifespan._start_superexec_if_needed)


def test_grid_keeps_the_public_methods_fast_grid_uses():
    from flwr.serverapp import Grid

    assert {"push_messages", "pull_messages", "send_and_receive", "get_node_ids"} <= set(Grid.__abstractmethods__)
    assert parameters(Grid.send_and_receive) == {"self", "messages", "timeout"}


def test_run_clientapp_ends_through_its_modules_flwr_exit_which_the_worker_replaces():
    """flrepo.fl.message.warm_worker replaces `flwr_exit` in run_clientapp's module (Flower's exit
    starts a thread that hard-exits the process seconds later: the worker must outlive its task)."""
    import flwr.supernode.runtime.run_clientapp as module
    from flwr.supercore.exit import exit as flower_exit
    from flwr.supercore.exit import exit_handler

    assert module.flwr_exit is flower_exit.flwr_exit or module.flwr_exit.__module__.startswith("flrepo")
    source = inspect.getsource(module.run_clientapp)
    assert "flwr_exit(" in source and "register_signal_handlers(" in source
    assert "os._exit" in inspect.getsource(flower_exit.flwr_exit)  # why it is replaced
    assert "run_before_force_exit" in inspect.signature(exit_handler.trigger_exit_handlers).parameters


def test_flowers_object_pulls_wait_by_keyword_defaults_that_quick_object_pulls_shortens():
    """Every hop of a message pulls its objects through these two functions, whose retry interval
    (1 s, doubling to 10 s, in Flower 1.42) is a keyword default; flrepo's processes shorten it."""
    import subprocess
    import sys

    from flwr.supercore.inflatable import inflatable_utils

    for function in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        assert {"initial_backoff", "backoff_cap"} <= set(function.__kwdefaults__ or {})
    grid = inspect.getsource(__import__("flwr.superlink.grid.http_grid", fromlist=["x"]))
    node = inspect.getsource(__import__("flwr.supernode.start_client_internal", fromlist=["x"]))
    app = inspect.getsource(__import__("flwr.supernode.runtime.run_clientapp", fromlist=["x"]))
    assert "pull_objects(" in grid and "pull_objects(" in node and "pull_and_inflate_object_from_tree(" in app
    code = (
        "from flrepo.fl.message.polling import quick_object_pulls as q; q(); "
        "from flwr.supercore.inflatable import inflatable_utils as u; "
        "print(u.pull_objects.__kwdefaults__['initial_backoff'], "
        "u.pull_and_inflate_object_from_tree.__kwdefaults__['backoff_cap'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0.01", "1.0"]


def test_the_superlinks_middleware_is_the_list_scoped_middleware_knows_and_each_passes_on_what_is_out_of_scope():
    """flrepo.fl.message.scoped_middleware sends a request through six of Flower's middleware only
    when it is in that middleware's scope: each must pass any other request on untouched, and Flower's
    list must hold no middleware flrepo has not looked at."""
    import asyncio

    from flwr.superlink import main
    from flwr.superlink.routers.control import middlewares as control
    from flwr.superlink.routers.fleet.middlewares import FleetEventLogMiddleware
    from flwr.superlink.routers.fleet.node_auth import NodeAuthMiddleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.requests import Request
    from starlette.responses import Response

    from flrepo.fl.message import scoped_middleware

    known = scoped_middleware.scopes()
    assert [m.cls for m in main._get_middleware()] == [  # no extensions installed; outermost first
        control.ControlSensitiveResponseMiddleware,
        BaseHTTPMiddleware,  # the error translator: every request
        control.ControlAuthenticationMiddleware,
        control.ControlLicenseMiddleware,
        main.ProtobufTranslationMiddleware,  # every request
        control.ControlEventLogMiddleware,
        NodeAuthMiddleware,
        FleetEventLogMiddleware,
    ]
    assert len(known) == 6

    async def call_next(request: Request) -> Response:
        return Response(b"handled", headers={"x-handled": "1"})

    async def out_of_scope(cls: type, method: str, path: str) -> Response:
        scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b"", "app": None}
        middleware = cls.__new__(cls)  # dispatch only: no app around it, no plugins loaded
        middleware._license_plugin = None
        return await middleware.dispatch(Request(scope), call_next)

    requests = {"runtime": ("POST", "/v1/runtime/push-object"), "fleet": ("POST", "/v1/fleet/pull-object")}
    requests["control"] = ("POST", "/v1/control/list-runs")
    for cls, applies in known.items():
        for method, path in requests.values():
            if applies(method, path):
                continue
            response = asyncio.run(out_of_scope(cls, method, path))
            assert response.body == b"handled" and dict(response.headers).get("cache-control") is None, (cls, path)

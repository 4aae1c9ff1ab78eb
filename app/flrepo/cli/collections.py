"""What differs between `flrepo models|results|strategies|transformations|tasks`: one Collection
spec each (keys, table columns, the SDK calls, extra options). flrepo.cli.items writes the commands
once over these specs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flrepo.client import RepositoryClient, calls
from flrepo.schemas.tasks import TaskOut

# --- arguments --------------------------------------------------------------------------------


def json_arg(text: str) -> Any:
    """A JSON value given inline, or `@path` to read it from a file."""
    try:
        if text.startswith("@"):
            return json.loads(Path(text[1:]).read_text())
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from exc


def json_object(text: str) -> dict[str, Any]:
    value = json_arg(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


# --- collections ------------------------------------------------------------------------------

Keys = list[str]
Options = argparse._ActionsContainer  # a parser or an argument group of one
# What each key argument is, for `--help`; "{noun}" is the collection's.
KEY_HELP = {
    "name": "the {noun}'s name",
    "version": "the model's version",
    "model_name": "the model's name",
    "model_version": "the model's version",
    "training_id": "the training's id",
    "id": "the {noun}'s id",
    "task_id": "the task's id",
}


@dataclass
class Collection:
    """What differs between the collections; the commands are written once over this."""

    command: str
    noun: str
    keys: tuple[str, ...]
    columns: tuple[str, ...]
    show: Callable[[RepositoryClient, Keys], BaseModel | dict[str, Any]]
    listing: Callable[[RepositoryClient, argparse.Namespace], calls.Page[Any]]
    create: Callable[[RepositoryClient, Keys, argparse.Namespace], BaseModel]
    # Adds the create options to `create` (False) or, for `upload --create`, to `upload` (True).
    create_options: Callable[[Options, bool], None]
    delete: Callable[[RepositoryClient, Keys], None]
    file_path: Callable[[Keys], str] | None = None
    create_needs: str = ""  # the options `upload --create` cannot do without, as `--help` spells them
    list_options: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    signed: str | None = None  # the artifact kind whose signature downloads check


def _model_create_options(parser: Options, upload: bool) -> None:
    parser.add_argument(
        "--library", required=not upload, metavar="LIB", help="the library local executions train with, e.g. numpy"
    )
    parser.add_argument("--description", help="a description, kept in meta")
    parser.add_argument("--meta", type=json_object, default={}, help="more metadata: JSON object or @file.json")


def _model_list_options(parser: argparse.ArgumentParser) -> None:
    trained = parser.add_mutually_exclusive_group()
    trained.add_argument("--trained", dest="trained", action="store_true", default=None, help="with training results")
    trained.add_argument("--untrained", dest="trained", action="store_false", help="without training results")
    trained.add_argument("--available", action="store_true", help="only models with a file, newest first")


def _list_models(repo: RepositoryClient, args: argparse.Namespace) -> calls.Page[Any]:
    if args.available:
        return repo.available_models(limit=args.limit, offset=args.offset)
    return repo.list_models(trained=args.trained, limit=args.limit, offset=args.offset)


def _create_model(repo: RepositoryClient, keys: Keys, args: argparse.Namespace) -> BaseModel:
    meta = dict(args.meta)
    if args.description:
        meta["description"] = args.description
    return repo.create_model(keys[0], keys[1], args.library, **meta)


def _result_create_options(parser: Options, upload: bool) -> None:
    parser.add_argument(
        "--results",
        type=json_object,
        required=not upload,
        default={},
        help="metrics: JSON object or @file.json" + (" (default: {})" if upload else ""),
    )
    if not upload:  # upload has its own, which names the configuration the weights belong to
        parser.add_argument("--configuration-id", default="1", help="default: 1")


def _result_list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", nargs=2, metavar=("NAME", "VERSION"), help="only this model's results")


def _list_results(repo: RepositoryClient, args: argparse.Namespace) -> calls.Page[Any]:
    if args.model:
        name, version = args.model
        return repo.list_model_training_results(name, version, limit=args.limit, offset=args.offset)
    return repo.list_training_results(limit=args.limit, offset=args.offset)


def _strategy_create_options(parser: Options, upload: bool) -> None:
    parser.add_argument("--description", help="what the strategy does")
    parser.add_argument("--meta", type=json_object, default={}, help="JSON object or @file.json")


def _transformation_create_options(parser: Options, upload: bool) -> None:
    parser.add_argument("--description", help="what the transformation does")
    parser.add_argument("--parameter-types", type=json_object, default={}, help='e.g. {"categories": "int"}')
    parser.add_argument("--default-values", type=json_object, default={}, help='e.g. {"categories": 10}')
    parser.add_argument("--outputs", type=json_arg, default=[], help='e.g. ["np.ndarray", "np.ndarray"]')
    parser.add_argument("--needs", type=json_object, default={}, help="storage, RAM, GPU, ... as a JSON object")
    parser.add_argument("--meta", type=json_object, default={}, help="JSON object or @file.json")


def _create_transformation(repo: RepositoryClient, keys: Keys, args: argparse.Namespace) -> BaseModel:
    return repo.create_transformation(
        keys[0],
        description=args.description,
        parameter_types=args.parameter_types,
        default_values=args.default_values,
        outputs=args.outputs,
        needs=args.needs,
        meta=args.meta,
    )


def _task_create_options(parser: Options, upload: bool) -> None:
    parser.add_argument("--spec", type=json_object, required=True, help="the task: JSON object or @task.json")


def _task_list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--phase", choices=["Pending", "Running", "Succeeded", "Failed"])


def _create_task(repo: RepositoryClient, keys: Keys, args: argparse.Namespace) -> BaseModel:
    spec = dict(args.spec)
    if keys[0] != "-":
        spec["task_id"] = keys[0]
    return repo.create_task(spec)


COLLECTIONS = [
    Collection(
        "models",
        "model",
        ("name", "version"),
        ("model_name", "model_version", "meta.library", "size", "sha256", "uploaded_at"),
        show=lambda repo, k: repo.get_model(k[0], k[1]),
        listing=_list_models,
        create=_create_model,
        create_options=_model_create_options,
        delete=lambda repo, k: repo.delete_model(k[0], k[1]),
        file_path=lambda k: calls.model_file(k[0], k[1]),
        create_needs="--library LIB",
        list_options=_model_list_options,
    ),
    Collection(
        "results",
        "training result",
        ("model_name", "model_version", "training_id"),
        ("model_name", "model_version", "training_id", "configuration_id", "results", "size"),
        show=lambda repo, k: repo.get_training_result(k[0], k[1], k[2]),
        listing=_list_results,
        create=lambda repo, k, a: repo.create_training_result(k[0], k[1], k[2], a.results, a.configuration_id),
        create_options=_result_create_options,
        delete=lambda repo, k: repo.delete_training_result(k[0], k[1], k[2]),
        file_path=lambda k: calls.weights_download(k[0], k[1], k[2]),
        list_options=_result_list_options,
    ),
    Collection(
        "strategies",
        "strategy",
        ("name",),
        ("strategy_name", "strategy_description", "meta.class", "meta.key_id", "size", "sha256"),
        show=lambda repo, k: repo.get_strategy(k[0]),
        listing=lambda repo, a: repo.list_strategies(limit=a.limit, offset=a.offset),
        create=lambda repo, k, a: repo.create_strategy(k[0], a.description, a.meta),
        create_options=_strategy_create_options,
        delete=lambda repo, k: repo.delete_strategy(k[0]),
        file_path=lambda k: calls.strategy_file(k[0]),
        signed="strategy",
    ),
    Collection(
        "transformations",
        "transformation",
        ("id",),
        ("id", "description", "outputs", "meta.key_id", "size", "sha256"),
        show=lambda repo, k: repo.get_transformation(k[0]),
        listing=lambda repo, a: repo.list_transformations(limit=a.limit, offset=a.offset),
        create=_create_transformation,
        create_options=_transformation_create_options,
        delete=lambda repo, k: repo.delete_transformation(k[0]),
        file_path=lambda k: calls.transformation_file(k[0]),
        signed="transformation",
    ),
    Collection(
        "tasks",
        "task",
        ("task_id",),
        ("task_id", "phase", "current_round", "rounds", "model.model_name", "strategy.strategy_name"),
        show=lambda repo, k: _task_with_traffic(repo.get_task(k[0])),
        listing=lambda repo, a: repo.list_tasks(phase=a.phase, limit=a.limit, offset=a.offset),
        create=_create_task,
        create_options=_task_create_options,
        delete=lambda repo, k: repo.delete_task(k[0]),
        list_options=_task_list_options,
    ),
]


TRAFFIC = ("bytes_up", "bytes_up_raw", "bytes_down", "bytes_down_raw", "encode_ms", "decode_ms")


def _task_with_traffic(task: TaskOut) -> dict[str, Any]:
    """The task, with its updates' traffic over the rounds shown (each round's is in its record):
    bytes each way as sent and as plain arrays, their ratio, codec milliseconds."""
    shown = task.model_dump(mode="json")
    rounds = [r for r in task.history if r.bytes_up is not None]
    if rounds:
        sums = {name: sum(getattr(r, name) or 0 for r in rounds) for name in TRAFFIC}
        shown["traffic"] = {
            "rounds": len(rounds),
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in sums.items()},
            "uplink_ratio": round(sums["bytes_up_raw"] / sums["bytes_up"], 2) if sums["bytes_up"] else None,
            "downlink_ratio": round(sums["bytes_down_raw"] / sums["bytes_down"], 2) if sums["bytes_down"] else None,
        }
    return shown


def key_help(spec: Collection, key: str) -> str:
    return KEY_HELP.get(key, key).format(noun=spec.noun)

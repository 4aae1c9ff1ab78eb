"""Flower's HTTP endpoints run on the event loop's thread instead of a worker thread each.

Flower 1.42's SuperLink and SuperNode APIs are FastAPI apps whose endpoints are plain functions, so
FastAPI hands every request to a worker thread (`run_in_threadpool`: an anyio task, a thread pool
queue, two thread switches and the GIL handed over and back) to run a handler that takes well under
a millisecond: it reads or writes Flower's in-memory state. At ~100 requests per exchange on a
3-site round, that machinery was a good part of the runtime's CPU, on the cores the training needs.

`install()` makes FastAPI call such endpoints (and their plain-function dependencies, and response
validation) directly, in this process only: the SuperLink's and the SuperNode's, where nothing but
Flower's apps is served. None of their Fleet or Runtime handlers blocks (their log and event streams,
which sleep, are iterated by Starlette, which this leaves alone). tests/fl/test_flower_internals.py
fails loudly if FastAPI stops calling these names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Where FastAPI 0.138 looks `run_in_threadpool` up at call time (module globals).
MODULES = ("fastapi.routing", "fastapi.dependencies.utils")


async def run_inline(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`starlette.concurrency.run_in_threadpool`, without the thread."""
    return func(*args, **kwargs)


def install() -> None:
    """Make this process's FastAPI apps run plain-function endpoints on the event loop's thread."""
    import importlib

    for name in MODULES:
        module = importlib.import_module(name)
        if not hasattr(module, "run_in_threadpool"):
            raise RuntimeError(f"{name} no longer calls run_in_threadpool: flrepo's inline endpoints need a look")
        module.run_in_threadpool = run_inline  # type: ignore[attr-defined]

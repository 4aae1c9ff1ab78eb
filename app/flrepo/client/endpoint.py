"""Turn a call shape from `calls` into a client method: `list_models = SyncEndpoint(calls.list_models)`.

The method has the shape function's signature and docstring; the sync flavour returns the typed
value, the async one an awaitable of it. That is how both clients share one definition per call.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Generic, ParamSpec, TypeVar

from flrepo.client.calls import Call

P = ParamSpec("P")
T = TypeVar("T")


class SyncEndpoint(Generic[P, T]):
    def __init__(self, shape: Callable[P, Call[T]]) -> None:
        self.shape = shape
        self.__doc__ = shape.__doc__

    def __get__(self, client: Any, owner: type | None = None) -> Callable[P, T]:
        shape = self.shape

        @functools.wraps(shape)
        def method(*args: P.args, **kwargs: P.kwargs) -> T:
            result: T = client.send(shape(*args, **kwargs))
            return result

        return method


class AsyncEndpoint(Generic[P, T]):
    def __init__(self, shape: Callable[P, Call[T]]) -> None:
        self.shape = shape
        self.__doc__ = shape.__doc__

    def __get__(self, client: Any, owner: type | None = None) -> Callable[P, Awaitable[T]]:
        shape = self.shape

        @functools.wraps(shape)
        async def method(*args: P.args, **kwargs: P.kwargs) -> T:
            result: T = await client.send(shape(*args, **kwargs))
            return result

        return method

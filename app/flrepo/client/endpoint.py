"""Turn a call shape from `calls` into a client method: `list_models = SyncEndpoint(calls.list_models)`.

The method has the shape function's signature and docstring; the sync flavour returns the typed
value, the async one an awaitable of it. That is how both clients share one definition per call.
`SyncPager` / `AsyncPager` turn a list call into an iterator over every page (`iter_models`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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


# --- every page of a list ---------------------------------------------------------------------
# `iter_models = SyncPager(calls.list_models)`: the list call's parameters without limit/offset, plus
# page_size; the items of every page in turn, one request per page. page_size=None (the default) asks
# for the server's own page size (its list cap, FLREPO_LIST_CAP); a larger page_size is refused by
# the server. Offsets move by what each page held, until an empty page or the total (X-Total-Count).


def _pager_signature(shape: Callable[..., Any]) -> inspect.Signature:
    signature = inspect.signature(shape)
    kept = [p for name, p in signature.parameters.items() if name not in ("limit", "offset")]
    size = inspect.Parameter("page_size", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="int | None")
    return signature.replace(parameters=[*kept, size], return_annotation=inspect.Signature.empty)


def _pager_doc(shape: Callable[..., Any]) -> str:
    first = (shape.__doc__ or "").strip().splitlines()[0] if shape.__doc__ else ""
    return f"Every item of `{shape.__name__}`, a page (`page_size` items, default: the server's) at a time. {first}"


def _finished(page: list[Any], offset: int) -> bool:
    total = getattr(page, "total", None)
    return not page or (total is not None and offset >= total)


class _Pager(Generic[T]):
    """An `iter_*` method built from a list call shape: every item over every page."""

    def __init__(self, shape: Callable[..., Call[list[T]]]) -> None:
        self.shape = shape
        self.name = f"iter_{shape.__name__}"
        self.__doc__ = _pager_doc(shape)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def _dressed(self, method: Any) -> Any:
        """`method` named, documented and signed like the call it pages."""
        method.__name__ = method.__qualname__ = self.name
        method.__doc__ = self.__doc__
        method.__signature__ = _pager_signature(self.shape)
        return method


class SyncPager(_Pager[T]):
    def __get__(self, client: Any, owner: type | None = None) -> Callable[..., Iterator[T]]:
        shape = self.shape

        def method(*args: Any, page_size: int | None = None, **kwargs: Any) -> Iterator[T]:
            offset = 0
            while True:
                page: list[T] = client.send(shape(*args, limit=page_size, offset=offset, **kwargs))
                yield from page
                offset += len(page)
                if _finished(page, offset):
                    return

        return self._dressed(method)


class AsyncPager(_Pager[T]):
    def __get__(self, client: Any, owner: type | None = None) -> Callable[..., AsyncIterator[T]]:
        shape = self.shape

        async def method(*args: Any, page_size: int | None = None, **kwargs: Any) -> AsyncIterator[T]:
            offset = 0
            while True:
                page: list[T] = await client.send(shape(*args, limit=page_size, offset=offset, **kwargs))
                for item in page:
                    yield item
                offset += len(page)
                if _finished(page, offset):
                    return

        return self._dressed(method)

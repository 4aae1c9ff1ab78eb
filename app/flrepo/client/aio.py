"""AsyncRepositoryClient: the same SDK for asyncio code. File reads and writes run in worker
threads so the event loop never blocks on disk."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, TypeVar

import httpx

import flrepo.client.artifacts as artifacts
import flrepo.client.calls as calls
import flrepo.client.tus as tus
from flrepo.client.artifacts import Kind
from flrepo.client.base import AsyncSender, client_options
from flrepo.client.calls import TASK_TOKEN_HEADER, Call, Stored
from flrepo.client.endpoint import AsyncEndpoint, AsyncPager
from flrepo.client.errors import RepositoryError
from flrepo.client.retry import Attempts, Retry
from flrepo.client.transfer import Dest, Download, Downloaded, Progress, Source, Upload, in_folder, is_folder
from flrepo.signing import Keyring

T = TypeVar("T")


async def _chunks(upload: Upload) -> AsyncIterator[bytes]:
    pieces = upload.chunks()
    while (chunk := await asyncio.to_thread(next, pieces, None)) is not None:
        yield chunk


class AsyncRepositoryClient:
    """The asyncio twin of RepositoryClient: the same methods, to be awaited."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: Retry | None = None,
        keyring: Keyring | None = None,
        tus_threshold: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        options = client_options(base_url, api_key, timeout)
        self.base_url: str = options["base_url"]
        self.http = httpx.AsyncClient(transport=transport, **options)
        self.sender = AsyncSender(self.http, retry or Retry(), self.base_url)
        self.keyring = keyring if keyring is not None else Keyring.from_env()
        # Files from this size on go as resumable tus uploads (flrepo.client.tus).
        self.tus_threshold = tus.threshold(tus_threshold)

    @property
    def retry(self) -> Retry:
        """The retry policy of every request (settable)."""
        return self.sender.retry

    @retry.setter
    def retry(self, policy: Retry) -> None:
        self.sender.retry = policy

    async def aclose(self) -> None:
        await self.http.aclose()

    @property
    def task_token(self) -> str | None:
        """The task token (from `claim_task`) sent as `X-Task-Token` with every request once set, so status
        reports, heartbeats, checkpoints (tus included) and the task's output are the claimant's; None stops."""
        return self.http.headers.get(TASK_TOKEN_HEADER)

    @task_token.setter
    def task_token(self, token: str | None) -> None:
        if token is None:
            self.http.headers.pop(TASK_TOKEN_HEADER, None)
        else:
            self.http.headers[TASK_TOKEN_HEADER] = token

    async def __aenter__(self) -> AsyncRepositoryClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    # --- sending ------------------------------------------------------------------------------

    async def send(self, call: Call[T]) -> T:
        """Send one call, repeating it per the retry policy, and read its typed result."""
        request = self.sender.request(call.method, call.path, call.idempotent, params=call.params, json=call.json)
        return calls.read(call, await request)

    health = AsyncEndpoint(calls.health)
    ready = AsyncEndpoint(calls.ready)
    stat_file = AsyncEndpoint(calls.stat_file)

    list_models = AsyncEndpoint(calls.list_models)
    available_models = AsyncEndpoint(calls.available_models)
    get_model = AsyncEndpoint(calls.get_model)
    create_model = AsyncEndpoint(calls.create_model)
    update_model_meta = AsyncEndpoint(calls.update_model_meta)
    delete_model = AsyncEndpoint(calls.delete_model)

    list_training_results = AsyncEndpoint(calls.list_training_results)
    list_model_training_results = AsyncEndpoint(calls.list_model_training_results)
    get_training_result = AsyncEndpoint(calls.get_training_result)
    create_training_result = AsyncEndpoint(calls.create_training_result)
    delete_training_result = AsyncEndpoint(calls.delete_training_result)

    list_strategies = AsyncEndpoint(calls.list_strategies)
    get_strategy = AsyncEndpoint(calls.get_strategy)
    create_strategy = AsyncEndpoint(calls.create_strategy)
    update_strategy_meta = AsyncEndpoint(calls.update_strategy_meta)
    delete_strategy = AsyncEndpoint(calls.delete_strategy)

    list_transformations = AsyncEndpoint(calls.list_transformations)
    get_transformation = AsyncEndpoint(calls.get_transformation)
    create_transformation = AsyncEndpoint(calls.create_transformation)
    update_transformation_meta = AsyncEndpoint(calls.update_transformation_meta)
    delete_transformation = AsyncEndpoint(calls.delete_transformation)

    list_tasks = AsyncEndpoint(calls.list_tasks)
    get_task = AsyncEndpoint(calls.get_task)
    get_task_history = AsyncEndpoint(calls.get_task_history)
    create_task = AsyncEndpoint(calls.create_task)
    update_task_status = AsyncEndpoint(calls.update_task_status)
    claim_task = AsyncEndpoint(calls.claim_task)
    report_site = AsyncEndpoint(calls.report_site)
    cancel_task = AsyncEndpoint(calls.cancel_task)
    delete_task = AsyncEndpoint(calls.delete_task)
    list_checkpoints = AsyncEndpoint(calls.list_checkpoints)
    create_checkpoint = AsyncEndpoint(calls.create_checkpoint)

    list_uploads = AsyncEndpoint(calls.list_uploads)

    list_audit = AsyncEndpoint(calls.list_audit)

    # Every page of a list, as one iterator (flrepo.client.endpoint.AsyncPager).
    iter_models = AsyncPager(calls.list_models)
    iter_available_models = AsyncPager(calls.available_models)
    iter_training_results = AsyncPager(calls.list_training_results)
    iter_model_training_results = AsyncPager(calls.list_model_training_results)
    iter_strategies = AsyncPager(calls.list_strategies)
    iter_transformations = AsyncPager(calls.list_transformations)
    iter_tasks = AsyncPager(calls.list_tasks)
    iter_task_history = AsyncPager(calls.get_task_history)
    iter_checkpoints = AsyncPager(calls.list_checkpoints)
    iter_audit = AsyncPager(calls.list_audit)
    iter_uploads = AsyncPager(calls.list_uploads)

    # --- files --------------------------------------------------------------------------------

    async def upload(
        self, path: str, source: Source, *, filename: str | None = None, progress: Progress | None = None
    ) -> Stored:
        """Stream `source` (a path or a binary file object) to PUT `path` as a raw body; returns the
        stored file's size and sha256, as RepositoryClient.upload."""
        return await self._put(path, await asyncio.to_thread(Upload, source, filename, progress))

    async def _put(self, path: str, upload: Upload, stat: str | None = None) -> Stored:
        """PUT the upload (tus from the threshold up); what was stored comes as in RepositoryClient._put."""
        if tus.wanted(upload, self.tus_threshold):
            await tus.send_async(self.sender, path, upload)
            stored = None
        else:
            body = lambda: _chunks(upload)  # noqa: E731 - read afresh for every attempt
            response = await self.sender.request("PUT", path, upload.repeatable, body, headers=upload.headers)
            stored = upload.stored(response)
        if stored is not None:
            return stored
        try:
            return await self.send(calls.stat_file(stat or path))
        except RepositoryError:
            if stat is not None:
                raise
            return upload.stored_locally()

    async def download(
        self, path: str, dest: Dest, *, progress: Progress | None = None, resume: bool = True
    ) -> Downloaded:
        """Stream GET `path` into `dest`, verified and resumable, as RepositoryClient.download."""
        target = await asyncio.to_thread(Download, dest, progress, resume)
        plan = Attempts(self.retry, True, self.base_url)
        try:
            while True:
                try:
                    async with self.http.stream("GET", path, headers=target.request_headers()) as response:
                        if response.status_code == 416 and target.offset:
                            await asyncio.to_thread(target.unsatisfiable)
                            continue
                        if response.status_code >= 400:
                            await response.aread()
                            delay = plan.after_response(response) or 0.0
                        else:
                            await asyncio.to_thread(target.begin, response)
                            async for chunk in response.aiter_bytes():  # as received: a cut loses nothing
                                await asyncio.to_thread(target.write, chunk)
                            return await asyncio.to_thread(target.finish)
                except httpx.TransportError as exc:
                    await asyncio.to_thread(target.pause)
                    delay = plan.after_error(exc)
                await asyncio.sleep(delay)
        finally:
            await asyncio.to_thread(target.suspend)

    async def read(self, path: str, **options: Any) -> bytes:
        """A (small) file's bytes, verified like any download."""
        buffer = io.BytesIO()
        await self.download(path, buffer, **options)
        return buffer.getvalue()

    async def upload_model(self, model_name: str, model_version: str, source: Source, **options: Any) -> Stored:
        """Upload (or replace) a model's file; `options`: filename, progress. Returns its size and sha256."""
        return await self.upload(calls.model_file(model_name, model_version), source, **options)

    async def _into_folder(self, dest: Dest, item: Call[Any], fallback: str) -> Dest:
        """`dest`, or when it is a folder, the file in it named by the item's recorded file name made safe."""
        if not is_folder(dest):
            return dest
        stored = getattr(await self.send(item), "filename", None)
        return in_folder(dest, stored, fallback)

    async def download_model(self, model_name: str, model_version: str, dest: Dest, **options: Any) -> Downloaded:
        """Download a model's file, verified; `options`: progress, resume. A folder as `dest` gets the
        recorded file name, reduced to a safe base name."""
        item = calls.get_model(model_name, model_version)
        dest = await self._into_folder(dest, item, f"{model_name}-{model_version}")
        return await self.download(calls.model_file(model_name, model_version), dest, **options)

    async def upload_weights(
        self,
        model_name: str,
        model_version: str,
        training_id: str,
        configuration_id: str,
        source: Source,
        **options: Any,
    ) -> Stored:
        """Upload a training result's final weights (the configuration id must match the result's)."""
        path = calls.weights_upload(model_name, model_version, training_id, configuration_id)
        upload = await asyncio.to_thread(lambda: Upload(source, **options))
        return await self._put(path, upload, calls.weights_download(model_name, model_version, training_id))

    async def download_weights(
        self, model_name: str, model_version: str, training_id: str, dest: Dest, **options: Any
    ) -> Downloaded:
        """Download a training result's weights, verified."""
        item = calls.get_training_result(model_name, model_version, training_id)
        dest = await self._into_folder(dest, item, f"{model_name}-{model_version}-{training_id}")
        return await self.download(calls.weights_download(model_name, model_version, training_id), dest, **options)

    async def upload_checkpoint(
        self,
        task_id: str,
        round: int,
        source: Source,
        *,
        register: bool = False,
        loss: float | None = None,
        metrics: dict[str, Any] | None = None,
        **options: Any,
    ) -> Stored:
        """Upload a checkpoint's weights (.npz): registered before (create_checkpoint) or, with `register`,
        by this upload with `loss` and `metrics` (one request; two from the tus threshold up)."""
        upload = await asyncio.to_thread(Upload, source, **options)
        first, path = calls.checkpoint_upload(
            task_id, round, register, tus.wanted(upload, self.tus_threshold), loss, metrics
        )
        if first is not None:
            await self.send(first)
        return await self._put(path, upload)

    async def download_checkpoint(self, task_id: str, round: int, dest: Dest, **options: Any) -> Downloaded:
        """Download a checkpoint's weights, verified."""
        return await self.download(calls.checkpoint_file(task_id, round), dest, **options)

    async def download_models_archive(self, filename: str, dest: Dest, **options: Any) -> Downloaded:
        """Every model file in one archive; `filename` ends in .zip, .tar or .tar.gz."""
        return await self.download(calls.models_archive(filename), dest, **options)

    async def download_strategy(self, strategy_name: str, dest: Dest, **options: Any) -> Downloaded:
        """Download a strategy's file as bytes, verified against its ETag (not unpickled)."""
        dest = await self._into_folder(dest, calls.get_strategy(strategy_name), strategy_name)
        return await self.download(calls.strategy_file(strategy_name), dest, **options)

    async def download_transformation(self, transformation_id: str, dest: Dest, **options: Any) -> Downloaded:
        """Download a transformation's file as bytes, verified against its ETag (not unpickled)."""
        dest = await self._into_folder(dest, calls.get_transformation(transformation_id), transformation_id)
        return await self.download(calls.transformation_file(transformation_id), dest, **options)

    # --- signed artifacts ---------------------------------------------------------------------

    async def upload_strategy(
        self, strategy_name: str, source: Source, *, sign: bool | None = None, **options: Any
    ) -> Stored:
        """Upload a strategy's file and store its signature in `meta`."""
        upload = await asyncio.to_thread(lambda: Upload(source, **options))
        return await self._upload_artifact("strategy", strategy_name, upload, sign)

    async def upload_transformation(
        self, transformation_id: str, source: Source, *, sign: bool | None = None, **options: Any
    ) -> Stored:
        """Upload a transformation's file and store its signature in `meta`."""
        upload = await asyncio.to_thread(lambda: Upload(source, **options))
        return await self._upload_artifact("transformation", transformation_id, upload, sign)

    async def _upload_artifact(self, kind: Kind, name: str, upload: Upload, sign: bool | None) -> Stored:
        fields = await asyncio.to_thread(artifacts.signature, self.keyring, kind, name, upload, sign)
        path = artifacts.file_path(kind, name)
        stored = await self._put(path, upload, path)
        if fields:
            current = await self.send(artifacts.get_call(kind, name))
            await self.send(artifacts.signed_meta_call(kind, name, current, fields))
        return stored

    async def load_strategy(
        self, strategy_name: str, *, allow_unsigned: bool = False, sha256: str | None = None
    ) -> Any:
        """The strategy object, after checking size, sha256 and signature (SignatureError otherwise);
        with `sha256`, only that exact version (PinMismatch otherwise)."""
        return await self._load("strategy", strategy_name, allow_unsigned, sha256)

    async def load_transformation(
        self, transformation_id: str, *, allow_unsigned: bool = False, sha256: str | None = None
    ) -> Any:
        """The transformation object, after the same checks."""
        return await self._load("transformation", transformation_id, allow_unsigned, sha256)

    async def _load(self, kind: Kind, name: str, allow_unsigned: bool, sha256: str | None) -> Any:
        item = await self.send(artifacts.get_call(kind, name))
        artifacts.check_loadable(kind, name, item)
        buffer = io.BytesIO()
        done = await self.download(artifacts.file_path(kind, name), buffer)
        return await asyncio.to_thread(
            artifacts.unpickle_verified,
            self.keyring,
            kind,
            name,
            buffer.getvalue(),
            done,
            item.meta,
            allow_unsigned,
            sha256,
        )

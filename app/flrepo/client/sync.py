"""RepositoryClient: the blocking SDK (scripts, the CLI, training collectors and local executions)."""

from __future__ import annotations

import io
import time
from types import TracebackType
from typing import Any, TypeVar

import httpx

import flrepo.client.artifacts as artifacts
import flrepo.client.calls as calls
import flrepo.client.tus as tus
from flrepo.client.artifacts import Kind
from flrepo.client.base import Sender, client_options
from flrepo.client.calls import TASK_TOKEN_HEADER, Call, Stored
from flrepo.client.endpoint import SyncEndpoint, SyncPager
from flrepo.client.errors import RepositoryError
from flrepo.client.retry import Attempts, Retry
from flrepo.client.transfer import Dest, Download, Downloaded, Progress, Source, Upload, in_folder, is_folder
from flrepo.signing import Keyring

T = TypeVar("T")


class RepositoryClient:
    """Every endpoint of the FL repository, with typed results and typed errors (flrepo.client.errors).

    `base_url` defaults to FLREPO_URL, `api_key` to FLREPO_API_KEY (sent as a Bearer token), and
    the signing keys come from FLREPO_SIGNING_KEY / FLREPO_SIGNING_KEY_ID / FLREPO_VERIFY_KEYS
    unless `keyring` is given. Files of at least `tus_threshold` bytes (default FLREPO_TUS_THRESHOLD_BYTES,
    else 64 MiB) upload as resumable tus uploads. Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: Retry | None = None,
        keyring: Keyring | None = None,
        tus_threshold: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        options = client_options(base_url, api_key, timeout)
        self.base_url: str = options["base_url"]
        self.http = httpx.Client(transport=transport, **options)
        self.sender = Sender(self.http, retry or Retry(), self.base_url)
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

    def close(self) -> None:
        self.http.close()

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

    def __enter__(self) -> RepositoryClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    # --- sending ------------------------------------------------------------------------------

    def send(self, call: Call[T]) -> T:
        """Send one call, repeating it per the retry policy, and read its typed result."""
        response = self.sender.request(call.method, call.path, call.idempotent, params=call.params, json=call.json)
        return calls.read(call, response)

    health = SyncEndpoint(calls.health)
    ready = SyncEndpoint(calls.ready)
    stat_file = SyncEndpoint(calls.stat_file)

    list_models = SyncEndpoint(calls.list_models)
    available_models = SyncEndpoint(calls.available_models)
    get_model = SyncEndpoint(calls.get_model)
    create_model = SyncEndpoint(calls.create_model)
    update_model_meta = SyncEndpoint(calls.update_model_meta)
    delete_model = SyncEndpoint(calls.delete_model)

    list_training_results = SyncEndpoint(calls.list_training_results)
    list_model_training_results = SyncEndpoint(calls.list_model_training_results)
    get_training_result = SyncEndpoint(calls.get_training_result)
    create_training_result = SyncEndpoint(calls.create_training_result)
    delete_training_result = SyncEndpoint(calls.delete_training_result)

    list_strategies = SyncEndpoint(calls.list_strategies)
    get_strategy = SyncEndpoint(calls.get_strategy)
    create_strategy = SyncEndpoint(calls.create_strategy)
    update_strategy_meta = SyncEndpoint(calls.update_strategy_meta)
    delete_strategy = SyncEndpoint(calls.delete_strategy)

    list_transformations = SyncEndpoint(calls.list_transformations)
    get_transformation = SyncEndpoint(calls.get_transformation)
    create_transformation = SyncEndpoint(calls.create_transformation)
    update_transformation_meta = SyncEndpoint(calls.update_transformation_meta)
    delete_transformation = SyncEndpoint(calls.delete_transformation)

    list_tasks = SyncEndpoint(calls.list_tasks)
    get_task = SyncEndpoint(calls.get_task)
    get_task_history = SyncEndpoint(calls.get_task_history)
    create_task = SyncEndpoint(calls.create_task)
    update_task_status = SyncEndpoint(calls.update_task_status)
    claim_task = SyncEndpoint(calls.claim_task)
    report_site = SyncEndpoint(calls.report_site)
    cancel_task = SyncEndpoint(calls.cancel_task)
    delete_task = SyncEndpoint(calls.delete_task)
    list_checkpoints = SyncEndpoint(calls.list_checkpoints)
    create_checkpoint = SyncEndpoint(calls.create_checkpoint)

    list_uploads = SyncEndpoint(calls.list_uploads)

    list_audit = SyncEndpoint(calls.list_audit)

    # Every page of a list, as one iterator (flrepo.client.endpoint.SyncPager).
    iter_models = SyncPager(calls.list_models)
    iter_available_models = SyncPager(calls.available_models)
    iter_training_results = SyncPager(calls.list_training_results)
    iter_model_training_results = SyncPager(calls.list_model_training_results)
    iter_strategies = SyncPager(calls.list_strategies)
    iter_transformations = SyncPager(calls.list_transformations)
    iter_tasks = SyncPager(calls.list_tasks)
    iter_task_history = SyncPager(calls.get_task_history)
    iter_checkpoints = SyncPager(calls.list_checkpoints)
    iter_audit = SyncPager(calls.list_audit)
    iter_uploads = SyncPager(calls.list_uploads)

    # --- files --------------------------------------------------------------------------------

    def upload(
        self, path: str, source: Source, *, filename: str | None = None, progress: Progress | None = None
    ) -> Stored:
        """Stream `source` (a path or a binary file object) to PUT `path` as a raw body; returns the
        stored file's size and sha256 (from the answer's ETag, else a HEAD of `path`, else the bytes sent)."""
        return self._put(path, Upload(source, filename, progress))

    def _put(self, path: str, upload: Upload, stat: str | None = None) -> Stored:
        """PUT the upload (tus from the threshold up, flrepo.client.tus); what was stored comes from
        the answer's ETag, else from a HEAD of `stat` (the file's download path) or, when none is given,
        of `path` if the server answers one."""
        if tus.wanted(upload, self.tus_threshold):
            tus.send(self.sender, path, upload)  # completion answers no ETag: the HEAD below says what was stored
            stored = None
        else:
            response = self.sender.request("PUT", path, upload.repeatable, upload.chunks, headers=upload.headers)
            stored = upload.stored(response)
        if stored is not None:
            return stored
        try:
            return self.send(calls.stat_file(stat or path))
        except RepositoryError:
            if stat is not None:
                raise
            return upload.stored_locally()  # a path without HEAD: what was sent and accepted

    def download(self, path: str, dest: Dest, *, progress: Progress | None = None, resume: bool = True) -> Downloaded:
        """Stream GET `path` into `dest` (a path or a binary file object), checking the sha256 in
        the ETag. A path is written as `<dest>.part` and renamed when complete; a dropped
        connection resumes from where it stopped, and so does a later call after an interruption."""
        target = Download(dest, progress, resume)
        plan = Attempts(self.retry, True, self.base_url)
        try:
            while True:
                try:
                    with self.http.stream("GET", path, headers=target.request_headers()) as response:
                        if response.status_code == 416 and target.offset:
                            target.unsatisfiable()
                            continue
                        if response.status_code >= 400:
                            response.read()
                            delay = plan.after_response(response) or 0.0
                        else:
                            target.begin(response)
                            for chunk in response.iter_bytes():  # as received: a cut loses nothing already here
                                target.write(chunk)
                            return target.finish()
                except httpx.TransportError as exc:
                    target.pause()
                    delay = plan.after_error(exc)
                time.sleep(delay)
        finally:
            target.suspend()

    def read(self, path: str, **options: Any) -> bytes:
        """A (small) file's bytes, verified like any download."""
        buffer = io.BytesIO()
        self.download(path, buffer, **options)
        return buffer.getvalue()

    def upload_model(self, model_name: str, model_version: str, source: Source, **options: Any) -> Stored:
        """Upload (or replace) a model's file; `options`: filename, progress. Returns its size and sha256."""
        return self.upload(calls.model_file(model_name, model_version), source, **options)

    def _into_folder(self, dest: Dest, item: Call[Any], fallback: str) -> Dest:
        """`dest`, or when it is a folder, the file in it named by the item's recorded file name made safe."""
        if not is_folder(dest):
            return dest
        stored = getattr(self.send(item), "filename", None)
        return in_folder(dest, stored, fallback)

    def download_model(self, model_name: str, model_version: str, dest: Dest, **options: Any) -> Downloaded:
        """Download a model's file, verified; `options`: progress, resume. A folder as `dest` gets the
        recorded file name, reduced to a safe base name."""
        dest = self._into_folder(dest, calls.get_model(model_name, model_version), f"{model_name}-{model_version}")
        return self.download(calls.model_file(model_name, model_version), dest, **options)

    def upload_weights(
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
        return self._put(
            path, Upload(source, **options), calls.weights_download(model_name, model_version, training_id)
        )

    def download_weights(
        self, model_name: str, model_version: str, training_id: str, dest: Dest, **options: Any
    ) -> Downloaded:
        """Download a training result's weights, verified."""
        item = calls.get_training_result(model_name, model_version, training_id)
        dest = self._into_folder(dest, item, f"{model_name}-{model_version}-{training_id}")
        return self.download(calls.weights_download(model_name, model_version, training_id), dest, **options)

    def upload_checkpoint(
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
        upload = Upload(source, **options)
        first, path = calls.checkpoint_upload(
            task_id, round, register, tus.wanted(upload, self.tus_threshold), loss, metrics
        )
        if first is not None:
            self.send(first)
        return self._put(path, upload)

    def download_checkpoint(self, task_id: str, round: int, dest: Dest, **options: Any) -> Downloaded:
        """Download a checkpoint's weights, verified."""
        return self.download(calls.checkpoint_file(task_id, round), dest, **options)

    def download_models_archive(self, filename: str, dest: Dest, **options: Any) -> Downloaded:
        """Every model file in one archive; `filename` ends in .zip, .tar or .tar.gz."""
        return self.download(calls.models_archive(filename), dest, **options)

    def download_strategy(self, strategy_name: str, dest: Dest, **options: Any) -> Downloaded:
        """Download a strategy's file as bytes, verified against its ETag (not unpickled)."""
        dest = self._into_folder(dest, calls.get_strategy(strategy_name), strategy_name)
        return self.download(calls.strategy_file(strategy_name), dest, **options)

    def download_transformation(self, transformation_id: str, dest: Dest, **options: Any) -> Downloaded:
        """Download a transformation's file as bytes, verified against its ETag (not unpickled)."""
        dest = self._into_folder(dest, calls.get_transformation(transformation_id), transformation_id)
        return self.download(calls.transformation_file(transformation_id), dest, **options)

    # --- signed artifacts ---------------------------------------------------------------------

    def upload_strategy(
        self, strategy_name: str, source: Source, *, sign: bool | None = None, **options: Any
    ) -> Stored:
        """Upload a strategy's file and store its signature in `meta` (see artifacts.signature)."""
        return self._upload_artifact("strategy", strategy_name, Upload(source, **options), sign)

    def upload_transformation(
        self, transformation_id: str, source: Source, *, sign: bool | None = None, **options: Any
    ) -> Stored:
        """Upload a transformation's file and store its signature in `meta`."""
        return self._upload_artifact("transformation", transformation_id, Upload(source, **options), sign)

    def _upload_artifact(self, kind: Kind, name: str, upload: Upload, sign: bool | None) -> Stored:
        fields = artifacts.signature(self.keyring, kind, name, upload, sign)
        path = artifacts.file_path(kind, name)
        stored = self._put(path, upload, path)
        if fields:
            current = self.send(artifacts.get_call(kind, name))
            self.send(artifacts.signed_meta_call(kind, name, current, fields))
        return stored

    def load_strategy(self, strategy_name: str, *, allow_unsigned: bool = False, sha256: str | None = None) -> Any:
        """The strategy object, after checking size, sha256 and signature (SignatureError otherwise);
        with `sha256`, only that exact version (PinMismatch otherwise)."""
        return self._load("strategy", strategy_name, allow_unsigned, sha256)

    def load_transformation(
        self, transformation_id: str, *, allow_unsigned: bool = False, sha256: str | None = None
    ) -> Any:
        """The transformation object, after the same checks."""
        return self._load("transformation", transformation_id, allow_unsigned, sha256)

    def _load(self, kind: Kind, name: str, allow_unsigned: bool, sha256: str | None) -> Any:
        item = self.send(artifacts.get_call(kind, name))
        artifacts.check_loadable(kind, name, item)
        buffer = io.BytesIO()
        done = self.download(artifacts.file_path(kind, name), buffer)
        meta = item.meta
        return artifacts.unpickle_verified(
            self.keyring, kind, name, buffer.getvalue(), done, meta, allow_unsigned, sha256
        )

"""The FL runtime's view of the repository: tasks, status reports, verified artifacts, results."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import cloudpickle
import httpx

from app.signing import Keyring, verify

log = logging.getLogger(__name__)


class RepositoryError(Exception):
    pass


class Repo:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:300]
            raise RepositoryError(
                f"{response.request.method} {response.request.url.path}: {response.status_code} {detail}"
            )
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self._check(self.http.get(path, params=params)).json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._check(self.http.post(path, json=body)).json()

    def put_json(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self._check(self.http.put(path, json=body))

    def delete(self, path: str) -> None:
        self._check(self.http.delete(path))

    def upload(self, path: str, data: bytes, filename: str) -> None:
        self._check(
            self.http.put(
                path, content=data, headers={"content-type": "application/octet-stream", "x-filename": filename}
            )
        )

    def download(self, path: str) -> bytes:
        """The file's bytes, checked against the sha256 the server reports in its ETag."""
        response = self._check(self.http.get(path))
        etag = response.headers.get("etag", "").strip('"')
        if etag and hashlib.sha256(response.content).hexdigest() != etag:
            raise RepositoryError(f"{path}: downloaded bytes do not match the ETag sha256")
        return response.content

    # --- tasks ---------------------------------------------------------------------------------

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(self.get(f"/tasks/{task_id}"))

    def status(self, task_id: str, **fields: Any) -> dict[str, Any]:
        return dict(self.put_json(f"/tasks/{task_id}/status", fields).json())

    # --- signed artifacts ----------------------------------------------------------------------

    def strategy_meta(self, name: str) -> dict[str, Any]:
        for item in self.get("/strategy"):
            if item["strategy_name"] == name:
                return dict(item)
        raise RepositoryError(f"strategy {name!r} not found")

    def transformation_meta(self, transformation_id: str) -> dict[str, Any]:
        for item in self.get("/transformation"):
            if item["id"] == transformation_id:
                return dict(item)
        raise RepositoryError(f"transformation {transformation_id!r} not found")

    def load_strategy(self, name: str, keyring: Keyring, allow_unsigned: bool = False) -> Any:
        meta = self.strategy_meta(name).get("meta") or {}
        data = self.download(f"/strategy/{name}")
        verify(keyring, "strategy", name, data, meta, allow_unsigned)
        return cloudpickle.loads(data)  # only after the signature checked out

    def load_transformation(self, transformation_id: str, keyring: Keyring, allow_unsigned: bool = False) -> Any:
        meta = self.transformation_meta(transformation_id).get("meta") or {}
        data = self.download(f"/transformation/{transformation_id}")
        verify(keyring, "transformation", transformation_id, data, meta, allow_unsigned)
        return cloudpickle.loads(data)

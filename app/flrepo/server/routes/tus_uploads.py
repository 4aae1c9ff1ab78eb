"""Resumable uploads, tus 1.0 (core, creation, termination, checksum, expiration) at /uploads.

`Upload-Metadata` names the upload's `target`, the aerOS path of the file it completes (e.g.
`/model/base/base2`), and its `filename`. Creating an upload needs what a PUT to the target needs (the
checks that PUT makes before it reads a byte, see http.tus_targets); every later request on it needs
the same role and the key that created it. Parts stream into GridFS; the last one attaches the file
through the repository as a PUT would, and the audit trail records it as that PUT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request, Response
from starlette.requests import ClientDisconnect

from flrepo.schemas import Problem
from flrepo.schemas.tus_uploads import OpenUpload
from flrepo.server.auth import METHOD_ROLES, Principal, Role, TaskActor, authenticate, require
from flrepo.server.deps import DB, Page, SettingsDep, problems
from flrepo.server.http import tus
from flrepo.server.http.file_uploads import STREAMED_UPLOAD, clean_filename
from flrepo.server.http.tus import OFFSET_STREAM, TUS_RESUMABLE, UPLOAD_EXPIRES, UPLOAD_OFFSET, TusRoute, header
from flrepo.server.http.tus_targets import Target, resolve, stored_file
from flrepo.server.middleware import audit as audit_trail
from flrepo.server.repository import audit
from flrepo.server.repository import tus_uploads as store
from flrepo.server.repository.claims import Actor
from flrepo.server.settings import Settings
from flrepo.server.storage.db import Database

router = APIRouter(tags=["uploads"], route_class=TusRoute)

UploadId = Annotated[str, Path(max_length=64, description="The upload's id, from the `Location` of its creation")]
TusResumable = Annotated[str | None, Header(alias="Tus-Resumable", description="Must be 1.0.0")]
# Every file PUT is authorized by its method (flrepo.server.auth), so this is the role each target's
# PUT needs; the target's own checks are made at creation as well.
TARGET_ROLE = METHOD_ROLES["PUT"]

_TUS_PROBLEMS: dict[int, dict[str, Any]] = {
    400: {"description": "A tus header is missing or malformed", "example": "Upload-Offset must be a number"},
    412: {
        "description": "Tus-Resumable is not 1.0.0",
        "headers": {"Tus-Version": header("Supported: 1.0.0")},
        "example": "Tus-Resumable 1.0.0 is required",
    },
    415: {"description": f"The part is not {OFFSET_STREAM}", "example": f"Content-Type must be {OFFSET_STREAM}"},
    423: {
        "description": "Another request is writing to this upload; try again",
        "example": "another request is writing to this upload; try again",
    },
    460: {
        "description": "Checksum mismatch: the part was discarded",
        "example": "Upload-Checksum does not match the part; it was discarded",
    },
}


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The service's error answers (401, 403, 422, 503 and `codes`) plus tus's own."""
    found = problems(401, 403, *[c for c in codes if c not in _TUS_PROBLEMS])
    for code in codes:
        if code in _TUS_PROBLEMS:
            entry = dict(_TUS_PROBLEMS[code])
            example = {"detail": entry.pop("example")}
            found[code] = {"model": Problem, **entry, "content": {"application/json": {"example": example}}}
    return found


async def uploader(
    principal: Annotated[Principal, Depends(authenticate)], tus_resumable: TusResumable = None
) -> Principal:
    tus.check_version(tus_resumable)
    require(principal, TARGET_ROLE)
    return principal


Uploader = Annotated[Principal, Depends(uploader)]


def _owned(doc: dict[str, Any], principal: Principal) -> dict[str, Any]:
    if doc.get("key_id") != principal.key_id and principal.role < Role.ADMIN:
        raise HTTPException(403, "this upload was created with another API key")
    return doc


def _state_headers(doc: dict[str, Any], offset: int | None = None) -> dict[str, str]:
    headers = {"Upload-Offset": str(doc["offset"] if offset is None else offset), "Cache-Control": "no-store"}
    if doc.get("completed_at") is None:
        headers["Upload-Expires"] = tus.http_date(doc["expires_at"])
    return headers


@router.options(
    "/uploads",
    status_code=204,
    responses={
        204: {
            "description": "What this tus server supports",
            "headers": {
                "Tus-Resumable": TUS_RESUMABLE,
                "Tus-Version": header("Protocol versions: 1.0.0"),
                "Tus-Extension": header(f"Supported extensions: {tus.EXTENSIONS}"),
                "Tus-Max-Size": header("Largest upload in bytes", {"type": "integer"}),
                "Tus-Checksum-Algorithm": header("Checksum algorithms of Upload-Checksum"),
            },
        },
        **problems(),
    },
)
async def upload_options(settings: SettingsDep) -> Response:
    """The tus server's capabilities (no API key needed)."""
    return Response(
        status_code=204,
        headers={
            "Tus-Version": tus.TUS_VERSION,
            "Tus-Extension": tus.EXTENSIONS,
            "Tus-Max-Size": str(settings.max_upload_bytes),
            "Tus-Checksum-Algorithm": ",".join(store.CHECKSUMS),
        },
    )


@router.post(
    "/uploads",
    status_code=201,
    response_class=Response,
    responses={
        201: {
            "description": "Upload created; send its bytes with PATCH to `Location`",
            "headers": {
                "Location": header("The upload's URL (a path)"),
                "Tus-Resumable": TUS_RESUMABLE,
                "Upload-Offset": UPLOAD_OFFSET,
                "Upload-Expires": UPLOAD_EXPIRES,
            },
        },
        204: {"description": "An empty file (Upload-Length 0): attached to its target at once"},
        **_problems(400, 404, 409, 412, 413, 429, 507),
    },
)
async def create_upload(
    request: Request,
    db: DB,
    settings: SettingsDep,
    principal: Uploader,
    actor: TaskActor,
    upload_length: Annotated[str | None, Header(alias="Upload-Length", description="The file's size in bytes")] = None,
    upload_metadata: Annotated[
        str | None,
        Header(
            alias="Upload-Metadata",
            description="Comma-separated `key base64(value)` pairs: `target` (required, the file's API path such "
            "as /model/NAME/VERSION), `filename`, `filetype`",
        ),
    ] = None,
) -> Response:
    """Create a resumable upload of `Upload-Length` bytes for the file at `target`."""
    length = tus.parse_number("Upload-Length", upload_length)
    if length > settings.max_upload_bytes:
        raise HTTPException(413, f"the file is larger than the {settings.max_upload_bytes}-byte limit")
    metadata = tus.parse_metadata(upload_metadata)
    tus.check_metadata_keys(metadata)
    target = tus.metadata_text(metadata, "target")
    if not target:
        raise HTTPException(422, "Upload-Metadata must name the `target` path the file is for")
    filename = clean_filename(tus.metadata_text(metadata, "filename"))
    content_type = (tus.metadata_text(metadata, "filetype") or "").strip()[:255] or "application/octet-stream"
    await resolve(target).check(db, actor)
    quota = store.Quota(settings.upload_max_open, settings.upload_max_reserved_bytes)
    # One creation at a time per key in this process, so two cannot both pass the same count.
    async with db.dialect.item_lock(("upload-quota", principal.key_id)):
        await store.check_quota(db, principal.key_id, length, quota)
        doc = await store.create(
            db,
            length=length,
            target=target,
            filename=filename,
            content_type=content_type,
            metadata=upload_metadata or "",
            key_id=principal.key_id,
            expiry_s=settings.upload_expiry_s,
        )
    location = f"{request.scope.get('root_path', '')}/uploads/{doc['_id']}"
    if length == 0:  # nothing to PATCH: tus clients only create an empty file
        lease = await store.Lease.take(db, doc["_id"])
        try:
            await _complete(request, db, settings, doc, _Caller(principal, actor))
        finally:
            await lease.release()
        return Response(status_code=201, headers={"Location": location, "Upload-Offset": "0"})
    return Response(status_code=201, headers={"Location": location, **_state_headers(doc)})


@router.get("/uploads", response_model=list[OpenUpload], responses=problems(401, 403))
async def list_uploads(
    db: DB, page: Page, response: Response, principal: Annotated[Principal, Depends(authenticate)]
) -> list[dict[str, Any]]:
    """Open (unfinished, unexpired) resumable uploads: the caller's own; an admin's key sees every key's.
    `X-Total-Count` holds how many there are."""
    require(principal, TARGET_ROLE)
    owner = None if principal.role >= Role.ADMIN else principal.key_id
    found, total = await store.page_open(db, owner, limit=page.limit, offset=page.offset)
    response.headers["X-Total-Count"] = str(total)
    return [{**doc, "id": doc.pop("_id")} for doc in found]


@router.head(
    "/uploads/{upload_id}",
    response_class=Response,
    responses={
        200: {
            "description": "The upload's offset and length",
            "headers": {
                "Tus-Resumable": TUS_RESUMABLE,
                "Upload-Offset": UPLOAD_OFFSET,
                "Upload-Length": header("The file's size in bytes", {"type": "integer"}),
                "Upload-Metadata": header("The metadata given at creation"),
                "Upload-Expires": UPLOAD_EXPIRES,
            },
        },
        **_problems(404, 412),
    },
)
async def upload_offset(upload_id: UploadId, db: DB, principal: Uploader) -> Response:
    """How much of the upload has arrived (waits a moment for a part still being stored)."""
    doc = _owned(await store.settled(db, upload_id), principal)
    headers = {**_state_headers(doc), "Upload-Length": str(doc["length"])}
    if doc.get("metadata"):
        headers["Upload-Metadata"] = doc["metadata"]
    return Response(status_code=200, headers=headers)


PATCH_OPENAPI: dict[str, Any] = {
    STREAMED_UPLOAD: True,
    "requestBody": {
        "required": True,
        "content": {OFFSET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
    },
}


@router.patch(
    "/uploads/{upload_id}",
    status_code=204,
    response_class=Response,
    openapi_extra=PATCH_OPENAPI,
    responses={
        204: {
            "description": "Part stored; the upload's new offset (the last part attaches the file to its target)",
            "headers": {
                "Tus-Resumable": TUS_RESUMABLE,
                "Upload-Offset": UPLOAD_OFFSET,
                "Upload-Expires": UPLOAD_EXPIRES,
            },
        },
        **_problems(400, 404, 409, 412, 413, 415, 423, 460),
    },
)
async def upload_part(
    upload_id: UploadId,
    request: Request,
    db: DB,
    settings: SettingsDep,
    principal: Uploader,
    actor: TaskActor,
    upload_offset: Annotated[
        str | None, Header(alias="Upload-Offset", description="Where this part starts: the upload's offset")
    ] = None,
    upload_checksum: Annotated[
        str | None,
        Header(alias="Upload-Checksum", description="`sha256 <base64 digest>` (or sha1) of this part's bytes"),
    ] = None,
) -> Response:
    """Append a part at `Upload-Offset` (the body, `application/offset+octet-stream`)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != OFFSET_STREAM:
        raise HTTPException(415, f"Content-Type must be {OFFSET_STREAM}")
    offset = tus.parse_number("Upload-Offset", upload_offset)
    checksum = tus.parse_checksum(upload_checksum, store.CHECKSUMS)
    declared = request.headers.get("content-length")
    _owned(await store.get(db, upload_id), principal)
    lease = await store.Lease.take(db, upload_id)
    body = _Body(request)
    try:
        doc = await store.get(db, upload_id)
        part = store.Part(offset, body.chunks(), int(declared) if declared and declared.isdigit() else None, checksum)
        doc = await store.write_part(db, doc, lease, part, settings.upload_expiry_s)
        if body.disconnected:
            raise ClientDisconnect()  # what arrived is kept; nobody is left to answer
        if doc["offset"] == doc["length"]:
            await _complete(request, db, settings, doc, _Caller(principal, actor))
            return Response(status_code=204, headers={"Upload-Offset": str(doc["offset"])})
    finally:
        await lease.release()
    return Response(status_code=204, headers=_state_headers(doc))


@router.delete("/uploads/{upload_id}", status_code=204, responses=_problems(404, 412, 423))
async def terminate_upload(upload_id: UploadId, db: DB, principal: Uploader) -> Response:
    """Stop an upload and remove what it stored (tus termination)."""
    _owned(await store.get(db, upload_id), principal)
    lease = await store.Lease.take(db, upload_id)
    try:
        await store.discard(db, await store.get(db, upload_id))
    finally:
        await lease.release()
    return Response(status_code=204)


class _Body:
    """The request body as it arrives; a client that goes away ends it early (and is noted)."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.disconnected = False

    async def chunks(self) -> Any:
        try:
            async for piece in self.request.stream():
                if piece:
                    yield piece
        except ClientDisconnect:
            self.disconnected = True


@dataclass(frozen=True)
class _Caller:
    """Who sends the upload: the key (for the audit trail) and the task token it carries, if any."""

    principal: Principal
    actor: Actor


async def _complete(request: Request, db: Database, settings: Settings, doc: dict[str, Any], caller: _Caller) -> None:
    """Attach the finished file to its target as the target's PUT would, and record it as that PUT. When
    the target refuses it (its error is the answer), the upload is removed: its target cannot take it."""
    stored = await store.finish(db, doc)
    try:
        target: Target = resolve(doc["target"])
        await target.attach(db, caller.actor, stored_file(stored, doc.get("filename")), settings.max_upload_bytes)
    except Exception:
        await store.discard(db, doc)
        raise
    await store.completed(db, doc)
    request_id = request.scope.get("state", {}).get("request_id", "")
    entry = audit_trail.entry(caller.principal, "PUT", target.path, target.route.template, 204, request_id)
    await audit.record(db, entry)

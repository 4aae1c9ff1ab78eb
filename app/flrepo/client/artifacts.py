"""Signed artifacts (strategies and transformations) on the client side: what to sign before an
upload, how the signature reaches the item's `meta`, and the checks before anything is unpickled.
Both clients use these; only the sending differs.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import pickle
from typing import Any, Literal

import flrepo.client.calls as calls
from flrepo.client.calls import Call
from flrepo.client.errors import TooLarge
from flrepo.client.transfer import Downloaded, Upload
from flrepo.schemas import StrategyOut, TransformationOut
from flrepo.signing import Keyring, PinMismatch, SignatureError, sign_digest, verify_digest

log = logging.getLogger(__name__)

Kind = Literal["strategy", "transformation"]
# Strategies and transformations are small code objects; refuse to pull a huge "pickle" into memory.
MAX_LOAD_BYTES = 256 * 1024 * 1024
# Pickles name classes by module path, and this package was imported as `app` before it became
# `flrepo`: the built-in transformations seeded then are `app.fl.transformations.<class>`. The old
# name is tried first, so a user's own `app` package still gets its own classes.
RENAMED_MODULES = {"app.fl.transformations": "flrepo.fl.transformations"}


def file_path(kind: Kind, name: str) -> str:
    return calls.strategy_file(name) if kind == "strategy" else calls.transformation_file(name)


def get_call(kind: Kind, name: str) -> Call[StrategyOut | TransformationOut]:
    return calls.get_strategy(name) if kind == "strategy" else calls.get_transformation(name)


def signature(keyring: Keyring, kind: Kind, name: str, upload: Upload, sign: bool | None) -> dict[str, Any] | None:
    """The signature fields for this upload (reads the source once), or None when not signing.

    sign=None signs when a key is configured; True insists on it; False never signs."""
    if sign is False or (sign is None and not keyring.wants_to_sign):
        log.warning(
            "uploading %s %r unsigned: clients will refuse to load it (set FLREPO_SIGNING_KEY_FILE)", kind, name
        )
        return None
    keyring.require_signing(f"signing {kind} {name!r}")  # before reading the file
    if not upload.repeatable:
        raise SignatureError("a signed upload reads its source twice: give a path or a seekable file")
    digest = upload.digest()
    return sign_digest(keyring, kind, name, digest.sha256, digest.size)


def signed_meta_call(
    kind: Kind, name: str, current: StrategyOut | TransformationOut, fields: dict[str, Any]
) -> Call[None]:
    """The metadata update that stores `fields` (the signature) in the item's `meta`, keeping the rest."""
    meta = {**(current.meta or {}), **fields}  # an aerOS-era item may have `meta: null`
    if isinstance(current, StrategyOut):
        return calls.update_strategy_meta(name, meta)
    return calls.update_transformation_meta(
        name,
        parameter_types=current.parameter_types,
        default_values=current.default_values,
        outputs=current.outputs,
        needs=current.needs,
        description=current.description,
        meta=meta,
    )


def check_loadable(kind: Kind, name: str, item: StrategyOut | TransformationOut) -> None:
    if item.size is not None and item.size > MAX_LOAD_BYTES:
        raise TooLarge(f"{kind} {name!r} is {item.size} bytes, over the {MAX_LOAD_BYTES}-byte load limit")


def check_pinned(kind: Kind, name: str, done: Downloaded, sha256: str | None) -> None:
    """PinMismatch unless the downloaded bytes are the ones pinned (when a digest is pinned): a validly
    signed older or other version is refused as well."""
    if sha256 is not None and done.sha256 != sha256:
        raise PinMismatch(f"{kind} {name!r} is now {done.sha256[:12]}…, not the pinned {sha256[:12]}…; refusing it")


def unpickle_verified(
    keyring: Keyring,
    kind: Kind,
    name: str,
    data: bytes,
    done: Downloaded,
    meta: dict[str, Any] | None,
    allow_unsigned: bool,
    sha256: str | None = None,
) -> Any:
    """Check the pinned digest (if any), size, sha256 (as hashed while `data` was downloaded) and
    signature, and only then unpickle."""
    check_pinned(kind, name, done, sha256)
    verify_digest(keyring, kind, name, done.sha256, done.size, meta or {}, allow_unsigned)
    # cloudpickle's reconstructors are named inside the pickle and imported while it loads.
    if importlib.util.find_spec("cloudpickle") is None:  # the core install has no reason to carry it
        raise RuntimeError("loading strategies and transformations needs the fl extra: pip install 'flrepo[fl]'")
    return _RenamingUnpickler(io.BytesIO(data)).load()


class _RenamingUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            if module not in RENAMED_MODULES:
                raise
            return super().find_class(RENAMED_MODULES[module], name)

"""The Python SDK for the FL repository.

    from flrepo.client import RepositoryClient

    with RepositoryClient("http://127.0.0.1:9013", api_key="...") as repo:
        repo.create_model("digits", "v1", library="numpy")
        stored = repo.upload_model("digits", "v1", "weights.npz", progress=print)  # .size, .sha256
        for model in repo.iter_models():                  # every page
        repo.download_model("digits", "v1", "copy.npz")   # sha256-verified, resumable

`AsyncRepositoryClient` has the same methods as coroutines. Errors are the classes below; docs/CLI.md
has the whole tour, including signed strategies and transformations.
"""

from flrepo.client.aio import AsyncRepositoryClient
from flrepo.client.calls import Call, Page, Stored
from flrepo.client.errors import (
    Conflict,
    Forbidden,
    IntegrityError,
    Invalid,
    NotFound,
    RateLimited,
    RepositoryError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from flrepo.client.retry import Retry
from flrepo.client.sync import RepositoryClient
from flrepo.client.transfer import Downloaded
from flrepo.signing import Keyring, PinMismatch, SignatureError

__all__ = [
    "AsyncRepositoryClient",
    "Call",
    "Conflict",
    "Downloaded",
    "Forbidden",
    "IntegrityError",
    "Invalid",
    "Keyring",
    "NotFound",
    "Page",
    "PinMismatch",
    "RateLimited",
    "RepositoryClient",
    "RepositoryError",
    "Retry",
    "SignatureError",
    "Stored",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]

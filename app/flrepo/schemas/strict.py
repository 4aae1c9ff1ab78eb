"""Bodies of flrepo's own API refuse what they do not understand; read-back views of stored documents
do not.

A typo in a task (`round_timout`) must not silently become a different experiment, so every body that
only flrepo's own clients send derives from `StrictBody`: an unknown field is a validation error that
names the field and, when one is close, the field it probably meant. aerOS's bodies (models, training
results, strategies, transformations, collectors) stay lenient in flrepo.schemas.items, because aerOS
clients send their whole documents back with extra id fields.

Documents stored before a field was refused may still hold it; `StoredView` models (what the API
answers) drop such fields, at every depth, instead of failing on them.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ModelWrapValidatorHandler, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

UNKNOWN = "extra_forbidden"  # pydantic's own error type for an unknown field, kept so clients can match it
_DID_YOU_MEAN = "unknown field '{field}'; did you mean '{suggestion}'?"
_NO_SUCH_FIELD = "unknown field '{field}'"
_PYDANTIC_ERRORS = frozenset(get_args(ErrorType))


def suggestion(name: str, known: list[str]) -> str | None:
    """The known field `name` most probably meant (difflib's closest match), or None."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_field_error(name: str, known: list[str]) -> PydanticCustomError:
    """The error for field `name`, which is not among `known`: named, with a suggestion when one is close."""
    meant = suggestion(name, known)
    if meant is None:
        return PydanticCustomError(UNKNOWN, _NO_SUCH_FIELD, {"field": name})
    return PydanticCustomError(UNKNOWN, _DID_YOU_MEAN, {"field": name, "suggestion": meant})


def field_names(model: type[BaseModel]) -> list[str]:
    """The names a body of `model` may use (aliases where a field has one)."""
    return [info.alias or name for name, info in model.model_fields.items()]


def _again(error: Any, known: list[str]) -> InitErrorDetails:
    """One error of a failed validation, to raise again; the model's own unknown fields get their name
    and suggestion, errors of nested strict bodies were named by those bodies already."""
    loc, ctx = tuple(error["loc"]), error.get("ctx") or {}
    if error["type"] == UNKNOWN:
        if "field" in ctx:  # named by a nested body; rebuilt from its context, as pydantic keeps no template
            template = _DID_YOU_MEAN if "suggestion" in ctx else _NO_SUCH_FIELD
            return InitErrorDetails(type=PydanticCustomError(UNKNOWN, template, ctx), loc=loc, input=error["input"])
        name = str(loc[-1]) if loc else ""
        return InitErrorDetails(type=unknown_field_error(name, known), loc=loc, input=error["input"])
    if error["type"] in _PYDANTIC_ERRORS:
        return InitErrorDetails(type=error["type"], loc=loc, input=error["input"], ctx=ctx)
    # A custom error (a validator's own): its message kept as written, braces made inert.
    message = error["msg"].replace("{", "(").replace("}", ")")
    return InitErrorDetails(type=PydanticCustomError(error["type"], message), loc=loc, input=error["input"])


class StrictBody(BaseModel):
    """A request body of flrepo's own API: unknown fields are refused (422), each named, with the field
    it probably meant when one is close (`round_timout` → `round_timeout`).

    Derive new flrepo-only bodies from this class; never aerOS's bodies (see flrepo.schemas.items).
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _name_unknown_fields(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            if not any(error["type"] == UNKNOWN for error in errors):
                raise
            known = field_names(cls)
            raise ValidationError.from_exception_data(exc.title, [_again(e, known) for e in errors]) from None


# --- stored documents read back ---------------------------------------------------------------


def _strict_models(annotation: Any) -> Iterator[tuple[type[BaseModel], bool]]:
    """The strict bodies an annotation holds, each with whether it is a list of them
    (`ModelRef`, `list[Participant]`, `ResultRef | None`)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            yield from _strict_models(arg)
    elif origin is list:
        for inner, _ in _strict_models(get_args(annotation)[0] if get_args(annotation) else Any):
            yield inner, True
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation.model_config.get("extra") == "forbid":
            yield annotation, False


def split_unknown(
    model: type[BaseModel], data: Any, where: str = "", *, forbid: bool | None = None
) -> tuple[Any, list[str]]:
    """`data` without the fields `model` refuses (at every depth of strict bodies), and the dotted
    names of those fields. Fields of lenient models are left as they are; `forbid=True` treats the top
    level as strict too (to report what a stored document holds beyond its view)."""
    if not isinstance(data, dict):
        return data, []
    known = model.model_fields
    names = {info.alias or name: name for name, info in known.items()}
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    forbids = model.model_config.get("extra") == "forbid" if forbid is None else forbid
    for key, value in data.items():
        if key not in names:
            if forbids:
                dropped.append(f"{where}{key}")
                continue
            kept[key] = value
            continue
        for inner, many in _strict_models(known[names[key]].annotation):
            if many and isinstance(value, list):
                parts = [split_unknown(inner, item, f"{where}{key}[{i}].") for i, item in enumerate(value)]
                value = [part for part, _ in parts]
                dropped += [name for _, names_ in parts for name in names_]
            elif not many and isinstance(value, dict):
                value, inner_dropped = split_unknown(inner, value, f"{where}{key}.")
                dropped += inner_dropped
            break
        kept[key] = value
    return kept, dropped


class StoredView(BaseModel):
    """A stored document as the API answers it: fields that its strict bodies refuse today, written
    before they were refused (or by a newer server), are left out instead of failing the answer.
    Top-level fields unknown to the view are ignored; nested strict bodies are cleaned by `split_unknown`."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_fields(cls, data: Any) -> Any:
        return split_unknown(cls, data)[0] if isinstance(data, dict) else data

"""The file inputs of a generate request: start image, end image and audio, as URL, base64 or a
multipart/form-data file part, checked (size, real decode, audio duration, SSRF rules on URLs) before
any job exists.

Multipart bodies carry the request either as one `request` part (the JSON) or as plain form fields
(`prompt`, `num_frames`, ...: strings, converted to the field's type), plus file parts named `image`,
`end_image` and `audio`.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import ValidationError
from app.intake import ImageIntake
from app.workflows.inputs import API_INPUT_FIELDS, INPUT_KINDS, INPUT_NAMES

MULTIPART_SCHEMA = {
    "type": "object",
    "description": "The request as form fields (or one `request` part holding the JSON) plus file parts",
    "properties": {
        "request": {"type": "string", "description": "the request as JSON (instead of separate fields)"},
        "prompt": {"type": "string"},
        "image": {"type": "string", "format": "binary"},
        "end_image": {"type": "string", "format": "binary"},
        "audio": {"type": "string", "format": "binary"},
    },
}


def multipart_openapi(model_ref: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model_ref}"}},
                "multipart/form-data": {"schema": MULTIPART_SCHEMA},
            },
            "required": True,
        }
    }


async def read_body(
    request: Request, model: type[BaseModel], intake: ImageIntake
) -> tuple[Any, dict[str, Any]]:
    """(the validated body, {input name: staged upload}) from JSON or multipart/form-data. Uploaded
    files are checked (decoded) here and discarded again when the body does not validate."""
    content_type = request.headers.get("content-type", "")
    uploads: dict[str, Any] = {}
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_part_size=max(intake.max_bytes, intake.max_audio_bytes) + 1)
        except StarletteHTTPException as exc:
            raise ValidationError("body", f"is not valid multipart/form-data ({exc.detail})") from None
        data: dict[str, Any] = {}
        try:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if key not in INPUT_NAMES:
                        raise ValidationError(
                            key, f"unknown file part (file parts: {', '.join(INPUT_NAMES)})"
                        )
                    if key in uploads:
                        raise ValidationError(key, "is given twice")
                    uploads[key] = await _read_upload(value, key, intake)
                elif key == "request":
                    try:
                        parsed = json.loads(value)
                    except ValueError as exc:
                        raise ValidationError("request", f"is not JSON ({exc})") from None
                    if not isinstance(parsed, dict):
                        raise ValidationError("request", "must be a JSON object")
                    data.update(parsed)
                elif key in data:
                    raise ValidationError(key, "is given twice")
                else:
                    data[key] = value
            # plain form fields are text: convert them the lax way ("81" -> 81); a JSON part stays strict
            body = model.model_validate(data, strict=None if "request" in form else False)
        except PydanticValidationError as exc:
            _discard(uploads)
            raise RequestValidationError(
                [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors(include_url=False)]
            ) from None
        except BaseException:
            _discard(uploads)
            raise
        return body, uploads
    try:
        data = await request.json()
    except UnicodeDecodeError:
        raise ValidationError("body", "not valid JSON: the body is not UTF-8 text") from None
    except ValueError as exc:
        raise ValidationError("body", f"not valid JSON ({exc})") from None
    try:
        return model.model_validate(data), uploads
    except PydanticValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors(include_url=False)]
        ) from None


async def _read_upload(part: UploadFile, name: str, intake: ImageIntake) -> Any:
    audio = INPUT_KINDS[name] == "audio"
    limit = intake.max_audio_bytes if audio else intake.max_bytes
    raw = await part.read(limit + 1)
    if audio:
        return await intake.audio_from_bytes(raw, name)
    return await intake.from_bytes(raw, name)


def _discard(staged: dict[str, Any]) -> None:
    for f in staged.values():
        if f is not None:
            f.discard()


def given_fields(body: Any) -> dict[str, str]:
    """{input name: the one request field carrying it} from a body's `<input>_url` / `<input>_base64`
    fields, without fetching; two sources for one input is a `ValidationError` naming the first."""
    given: dict[str, str] = {}
    for name in INPUT_NAMES:
        url_field, b64_field = API_INPUT_FIELDS[name]
        sources = [f for f in (url_field, b64_field) if getattr(body, f, None) is not None]
        if len(sources) > 1:
            raise ValidationError(sources[0], f"give exactly one of {' or '.join(sources)}")
        if sources:
            given[name] = sources[0]
    return given


async def gather_inputs(
    body: Any, uploads: dict[str, Any], intake: ImageIntake, takes: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Every file input of a request, fetched/decoded: ({name: staged file}, {name: field it came in}).
    At most one source per input; `takes` (the workflow's inputs) lets a file it refuses be named before
    anything is fetched. On any error every staged file is discarded."""
    staged: dict[str, Any] = dict(uploads)
    given: dict[str, str] = {name: name for name in uploads}
    try:
        for name in INPUT_NAMES:
            url_field, b64_field = API_INPUT_FIELDS[name]
            url, b64 = getattr(body, url_field, None), getattr(body, b64_field, None)
            sources = [f for f, v in ((url_field, url), (b64_field, b64)) if v is not None]
            if name in uploads:
                sources.insert(0, name)
            if len(sources) > 1:
                raise ValidationError(sources[0], f"give exactly one of {' or '.join(sources)}")
            if sources:
                given[name] = sources[0]
        if takes is not None:
            for name, source in given.items():
                if name not in takes:
                    raise ValidationError(
                        source,
                        f"this workflow takes no {name.replace('_', ' ')} "
                        f"(it takes: {', '.join(takes) or 'text only'})",
                    )
        for name, source in given.items():
            if name in staged:
                continue
            audio = INPUT_KINDS[name] == "audio"
            value = getattr(body, source)
            if source.endswith("_url"):
                staged[name] = await (intake.audio_from_url if audio else intake.from_url)(value, source)
            else:
                staged[name] = await (intake.audio_from_base64 if audio else intake.from_base64)(
                    value or "", source
                )
    except BaseException:
        _discard(staged)
        raise
    return staged, given

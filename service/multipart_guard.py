"""Checks in front of BentoML's body parsing, for every route by its body's media type.

BentoML 1.4 picks a parser by the request's media type, whatever the route declares, and answers
500 to several malformed bodies before a route's code runs: a binary file under another field
name (``MultipartSerde.parse_request`` JSON-decodes its bytes: UnicodeDecodeError), a missing or
wrong boundary, a truncated body or a part without a name (Starlette's 400 ``HTTPException``,
which BentoML turns into a 500) and a file name too long for its temporary file (OSError). A
form field without a file name is taken as a URL and fetched by the server.

``UploadGuard`` reads a multipart route's body through the same parser (python-multipart) first
and answers 400 naming the field unless every file field holds exactly one file (a part with a
file name: nothing is ever fetched), every other part is a declared plain field at most once,
and nothing else is there. For a form read ``in_memory`` it also keeps the files it parsed and
hands them to the route in the request's state (``uploaded_files``): the body is parsed once
and nothing is written to disk. ``JsonBodyGuard`` answers 415 to a JSON route's body in a media
type that BentoML would parse as a form or a pickle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import error_response, field_error, replay_body

# BentoML names the upload's temporary file "tmp" + 8 characters + the client's file name. At
# most 120 bytes stay under the usual 255-byte file name limit even when the name is decoded as
# Latin-1 (up to 2 UTF-8 bytes per byte).
MAX_FILENAME_BYTES = 120
# The media types BentoML parses with another parser than JSON's (any other type is read as JSON).
NOT_JSON = (
    "multipart/form-data",
    "application/x-www-form-urlencoded",
    "application/vnd.bentoml+pickle",
)
# The request state's key under which UploadGuard leaves an in-memory form's files.
FILES_STATE = "dlserve_uploaded_files"


class _Parts:
    """python-multipart callbacks that keep each part's Content-Disposition and, when
    ``keep_data``, its data."""

    def __init__(self, keep_data: bool) -> None:
        self.dispositions: list[bytes] = []  # one per part, b"" when it has none
        self.data: list[list[bytes]] = []  # one per part, its chunks (none unless keep_data)
        self.ended = False  # the closing boundary was read
        self._name = self._value = b""
        self._keep_data = keep_data

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.dispositions.append(b"")
        self.data.append([])

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._keep_data:
            self.data[-1].append(data[start:end])

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        if self._name.lower() == b"content-disposition":
            self.dispositions[-1] = self._value  # the last one counts, as in Starlette
        self._name = self._value = b""

    def on_end(self) -> None:
        self.ended = True

    def files(self, fields: tuple[str, ...]) -> dict[str, bytes]:
        """The data of the part named by each of ``fields`` (one part each: checked before)."""
        names = [parse_options_header(d)[1].get(b"name") for d in self.dispositions]
        return {field: b"".join(self.data[names.index(field.encode())]) for field in fields}


@dataclass(frozen=True)
class UploadForm:
    """A multipart route's form: ``files``, the fields that each take exactly one uploaded file,
    and ``values``, the plain (not file) fields that may each appear once. ``in_memory``: the
    route takes the files from ``uploaded_files`` (the form has no ``values`` then)."""

    files: tuple[str, ...]
    values: tuple[str, ...] = ()
    in_memory: bool = False


@dataclass(frozen=True)
class UploadProblem:
    """Why a body is refused: the ``field`` it concerns, the error ``kind`` and the reason."""

    field: str
    kind: str
    reason: str

    def answer(self) -> JSONResponse:
        """The 400 response naming the field."""
        return error_response(
            400, f"{self.field}: {self.reason}", [field_error([self.field], self.reason, self.kind)]
        )


class UploadGuard:
    """ASGI middleware: a POST to a path of ``forms`` must be ``multipart/form-data`` holding
    exactly the parts its ``UploadForm`` allows (see the module docstring).

    Anything else gets a 400 naming the field before the app runs; a valid body is passed on
    unchanged. The body is read into memory, so add this middleware behind the size limit.
    """

    def __init__(self, app: ASGIApp, forms: dict[str, UploadForm]) -> None:
        self.app = app
        self.forms = forms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and scope["method"] == "POST"
        form = self.forms.get(scope["path"]) if guarded else None
        if form is None:
            await self.app(scope, receive, send)
            return
        content_type = Headers(scope=scope).get("content-type")
        body, parts = await _read_checked(form, content_type, receive)
        if isinstance(parts, UploadProblem):
            await parts.answer()(scope, receive, send)
            return
        if form.in_memory:
            scope.setdefault("state", {})[FILES_STATE] = parts.files(form.files)
        await self.app(scope, replay_body(body, receive), send)


def uploaded_files(request: Request) -> dict[str, bytes]:
    """The files of an ``in_memory`` form's request, by field, as ``UploadGuard`` checked them."""
    files: dict[str, bytes] = request.scope["state"][FILES_STATE]
    return files


class JsonBodyGuard:
    """ASGI middleware: a POST to one of ``paths`` (JSON routes) in a media type of
    ``NOT_JSON`` gets 415 naming the ``content-type`` header before BentoML parses it."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and scope["method"] == "POST"
        if guarded and scope["path"] in self.paths:
            media_type = _media_type(Headers(scope=scope).get("content-type"))
            if media_type in NOT_JSON:
                message = f"the body must be application/json, not {media_type}"
                loc: list[str | int] = ["header", "content-type"]
                response = error_response(
                    415, message, [field_error(loc, message, "unsupported_media_type")]
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _media_type(content_type: str | None) -> str:
    """The media type as BentoML picks its parser by it: before ``;``, stripped, as sent."""
    return (content_type or "").split(";")[0].strip()


async def _read_checked(
    form: UploadForm, content_type: str | None, receive: Receive
) -> tuple[bytes, _Parts | UploadProblem]:
    """The body and its parts (their data too for an ``in_memory`` form), or the problem that
    makes it unacceptable.

    The boundary is read as Starlette reads it, so an accepted body parses there too.
    """
    field = form.files[0]
    if _media_type(content_type) != "multipart/form-data":
        return b"", _file_problem(
            field, "multipart_required", "the content type is not multipart/form-data"
        )
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if boundary is None:
        return b"", _file_problem(field, "multipart_required", "the content type has no boundary")
    parts = _Parts(keep_data=form.in_memory)
    chunks: list[bytes] = []
    try:
        parser = MultipartParser(boundary, parts.callbacks())
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            parser.write(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        parser.finalize()
    except FormParserError:
        return b"", _file_problem(field, "invalid_multipart", "the multipart body is malformed")
    if not parts.ended:
        return b"", _file_problem(
            field, "invalid_multipart", "the multipart body ends before its closing boundary"
        )
    return b"".join(chunks), _parts_problem(form, parts.dispositions) or parts


def _file_problem(field: str, kind: str, reason: str) -> UploadProblem:
    return UploadProblem(
        field, kind, f"expected one file in the multipart field {field!r}: {reason}"
    )


def _parts_problem(form: UploadForm, dispositions: list[bytes]) -> UploadProblem | None:
    """What is wrong with the parts, unless they are exactly what ``form`` allows."""
    options = [parse_options_header(disposition)[1] for disposition in dispositions]
    names = [option.get(b"name") for option in options]
    for field in form.files:
        in_field = names.count(field.encode())
        if in_field != 1:
            count = "no part" if in_field == 0 else f"{in_field} parts"
            return _file_problem(
                field, "one_file_required", f"the body holds {count} named {field!r}"
            )
    allowed = [field.encode() for field in (*form.files, *form.values)]
    if any(name not in allowed for name in names):
        listed = ", ".join(repr(field) for field in (*form.files, *form.values))
        return _file_problem(
            form.files[0], "one_file_required", f"the body holds parts besides {listed}"
        )
    for name, option in zip(names, options, strict=True):
        field = (name or b"").decode("latin-1")
        filename = option.get(b"filename")
        if field in form.values:
            if filename is not None or names.count(name) > 1:
                return UploadProblem(
                    field,
                    "plain_field_required",
                    f"the multipart field {field!r} must be one plain value, not a file",
                )
        elif filename is None:
            return _file_problem(
                field,
                "one_file_required",
                f"the part {field!r} is not a file (it has no file name)",
            )
        elif len(filename) > MAX_FILENAME_BYTES or b"\x00" in filename:
            return _file_problem(
                field,
                "invalid_file_name",
                f"the file name must be at most {MAX_FILENAME_BYTES} bytes, without NUL",
            )
    return None

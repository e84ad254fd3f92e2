"""A check in front of BentoML's multipart parsing for a route that takes one uploaded file.

BentoML 1.4 answers 500 to several malformed uploads before the route's code runs: a binary
file under another field name (``MultipartSerde.parse_request`` JSON-decodes its bytes:
UnicodeDecodeError), a missing or wrong boundary, a truncated body or a part without a name
(Starlette's 400 ``HTTPException``, which BentoML turns into a 500), a field without a file
name (taken as a URL to download) and a file name too long for its temporary file (OSError).
``SingleFileUploadGuard`` reads the body through the same parser (python-multipart) first and
answers 400 naming the field unless the body holds exactly one part: a file in that field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import error_response, field_error, replay_body

# BentoML names the upload's temporary file "tmp" + 8 characters + the client's file name. At
# most 120 bytes stay under the usual 255-byte file name limit even when the name is decoded as
# Latin-1 (up to 2 UTF-8 bytes per byte).
MAX_FILENAME_BYTES = 120


class _PartHeaders:
    """python-multipart callbacks that keep each part's Content-Disposition, never its data."""

    def __init__(self) -> None:
        self.dispositions: list[bytes] = []  # one per part, b"" when it has none
        self.ended = False  # the closing boundary was read
        self._name = self._value = b""

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.dispositions.append(b"")

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


@dataclass(frozen=True)
class UploadProblem:
    """Why a body is refused: the error ``kind`` and what was wrong with it."""

    kind: str
    reason: str


class SingleFileUploadGuard:
    """ASGI middleware: a POST to a path of ``fields`` must be ``multipart/form-data`` holding
    exactly one part, a file (a part with a file name) in that path's form field.

    Anything else gets a 400 naming the field before the app runs; a valid body is passed on
    unchanged. The body is read into memory, so add this middleware behind the size limit.
    """

    def __init__(self, app: ASGIApp, fields: dict[str, str]) -> None:
        self.app = app
        self.fields = fields

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and scope["method"] == "POST"
        field = self.fields.get(scope["path"]) if guarded else None
        if field is None:
            await self.app(scope, receive, send)
            return
        content_type = Headers(scope=scope).get("content-type")
        body, problem = await _read_checked(field, content_type, receive)
        if problem is not None:
            message = f"expected one file in the multipart field {field!r}: {problem.reason}"
            response = error_response(
                400, f"{field}: {message}", [field_error([field], message, problem.kind)]
            )
            await response(scope, receive, send)
            return
        await self.app(scope, replay_body(body, receive), send)


async def _read_checked(
    field: str, content_type: str | None, receive: Receive
) -> tuple[bytes, UploadProblem | None]:
    """The body, and the problem that makes it unacceptable (None when it is acceptable).

    The content type is judged as BentoML picks its parser (the media type before ``;``,
    exactly) and the boundary as Starlette reads it, so an accepted body parses there too.
    """
    if content_type is None or content_type.split(";")[0].strip() != "multipart/form-data":
        return b"", UploadProblem(
            "multipart_required", "the content type is not multipart/form-data"
        )
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if boundary is None:
        return b"", UploadProblem("multipart_required", "the content type has no boundary")
    headers = _PartHeaders()
    chunks: list[bytes] = []
    try:
        parser = MultipartParser(boundary, headers.callbacks())
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            parser.write(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        parser.finalize()
    except FormParserError:
        return b"", UploadProblem("invalid_multipart", "the multipart body is malformed")
    if not headers.ended:
        return b"", UploadProblem(
            "invalid_multipart", "the multipart body ends before its closing boundary"
        )
    return b"".join(chunks), _parts_problem(field, headers.dispositions)


def _parts_problem(field: str, dispositions: list[bytes]) -> UploadProblem | None:
    """What is wrong with the parts, unless they are exactly one file in ``field``."""
    options = [parse_options_header(disposition)[1] for disposition in dispositions]
    names = [option.get(b"name") for option in options]
    in_field = names.count(field.encode())
    if in_field != 1:
        count = "no part" if in_field == 0 else f"{in_field} parts"
        return UploadProblem("one_file_required", f"the body holds {count} named {field!r}")
    if len(options) > 1:
        return UploadProblem("one_file_required", f"the body holds parts besides {field!r}")
    filename = options[0].get(b"filename")
    if filename is None:
        return UploadProblem(
            "one_file_required", f"the part {field!r} is not a file (it has no file name)"
        )
    if len(filename) > MAX_FILENAME_BYTES or b"\x00" in filename:
        return UploadProblem(
            "invalid_file_name",
            f"the file name must be at most {MAX_FILENAME_BYTES} bytes, without NUL",
        )
    return None

"""The files of a logged multipart upload (an image to ``/v1/images/classify``), read back.

A record keeps an upload's body as received when no field is redacted and the body is within
``DLSERVE_PAYLOAD_LOG_MAX_RECORD_BYTES`` (a larger one is dropped whole, counted as
``too_large``); with ``DLSERVE_PAYLOAD_LOG_REDACT`` set it holds a ``[not recorded ...]``
marker instead, since a body that is not JSON cannot be redacted. The body is parsed with the
parser the upload guard uses (python-multipart), with the boundary of the recorded
``Content-Type``.
"""

from __future__ import annotations

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

MULTIPART = "multipart/form-data"


class LoggedUploadError(ValueError):
    """A logged upload whose files cannot be read (not recorded, malformed)."""


def is_upload(content_type: str) -> bool:
    """Whether a record's request ``Content-Type`` is a multipart upload."""
    return content_type.split(";")[0].strip().lower() == MULTIPART


def uploaded_files(body: bytes, content_type: str) -> dict[str, bytes]:
    """The parts of a logged multipart body that are files (have a file name), by field
    name; ``LoggedUploadError`` when there is none or the body does not parse."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if boundary is None:
        raise LoggedUploadError("the recorded content type has no boundary")
    parts: list[tuple[list[bytes], list[bytes]]] = []  # (disposition, data chunks)
    header = [b"", b""]

    def on_part_begin() -> None:
        parts.append(([b""], []))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        if header[0].lower() == b"content-disposition":
            parts[-1][0][0] = header[1]
        header[:] = [b"", b""]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].append(data[start:end])

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise LoggedUploadError(f"the multipart body does not parse: {exc}") from exc
    files = {}
    for (disposition,), chunks in parts:
        options = parse_options_header(disposition)[1]
        if b"filename" in options and b"name" in options:
            files[options[b"name"].decode("latin-1")] = b"".join(chunks)
    if not files:
        raise LoggedUploadError("the body holds no file (a body not recorded holds none)")
    return files

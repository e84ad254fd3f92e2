"""Hand-built multipart bodies, malformed on purpose where a test needs it."""

from __future__ import annotations

BOUNDARY = "dlserve-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def form_part(name: str | None, data: bytes, filename: str | None = "upload.png") -> bytes:
    """One part; ``name`` or ``filename`` ``None`` leaves it out of Content-Disposition."""
    disposition = "form-data" + (f'; name="{name}"' if name is not None else "")
    disposition += f'; filename="{filename}"' if filename is not None else ""
    headers = f"Content-Disposition: {disposition}\r\nContent-Type: application/octet-stream"
    return f"--{BOUNDARY}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n"


def form_body(*parts: bytes) -> bytes:
    """The parts and the closing boundary."""
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()

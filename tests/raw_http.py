"""Requests held in flight over raw sockets: a body sent in two parts around an event."""

from __future__ import annotations

import json
import socket
import time

import httpx

from harness.local_server import LocalServer


def in_progress(server: LocalServer, route: str) -> float:
    """BentoML's count of requests to ``route`` the server is handling now."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("bentoml_service_request_in_progress{") and f'"{route}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_in_progress(
    server: LocalServer, route: str, count: int, timeout: float = 10, at_most: bool = False
) -> None:
    """Block until at least (``at_most``: at most) ``count`` requests to ``route`` are in
    flight."""
    deadline = time.monotonic() + timeout
    while (in_progress(server, route) > count) if at_most else (in_progress(server, route) < count):
        assert time.monotonic() < deadline, f"in flight: never {'<=' if at_most else '>='} {count}"
        time.sleep(0.1)


def request_head(route: str, length: int, headers: dict[str, str] | None = None) -> bytes:
    """The head of a JSON POST of ``length`` bytes to ``route`` (with ``headers``)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return (
        f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n{extra}\r\n"
    ).encode()


def read_response(sock: socket.socket, timeout: float = 30) -> tuple[int, dict]:
    """The status and JSON body of the response on ``sock``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without an answer (got {data!r})"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += sock.recv(65536)
    return status, json.loads(body)

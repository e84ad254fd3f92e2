"""Start ``bentoml serve`` for this repository on 127.0.0.1 and a free port (tests, bench)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status(url: str) -> int | None:
    """The HTTP status of ``GET url``; ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def private_home(shared: Path) -> Path:
    """A BentoML home of its own (task store, metrics folder, logs) over ``shared``'s models
    and Bentos: servers sharing one home wipe each other's task database and Prometheus files
    at start."""
    home = Path(tempfile.mkdtemp(prefix="dlserve-server-"))
    for store in ("models", "bentos"):
        (shared / store).mkdir(parents=True, exist_ok=True)
        (home / store).symlink_to(shared / store, target_is_directory=True)
    return home


class LocalServer:
    """A ``bentoml serve`` subprocess; ``env`` adds to (or overrides) this process's variables.

    It serves the models of ``BENTOML_HOME`` (from ``env`` or this process) from a private home:
    the repository's service, or with ``bento`` a built Bento's tag, from ``cwd`` (default: the
    repository).
    """

    def __init__(
        self, env: dict[str, str] | None = None, bento: str | None = None, cwd: Path = REPOSITORY
    ) -> None:
        # One worker unless asked: the service's default (one per CPU) would make every test
        # server start and hold each model once per core. No store polling unless asked: the
        # in-process tests register and remove versions in the shared store, which a polling
        # server would swap to and serve for up to a poll interval after they are gone.
        # The gRPC port too is a free one (the default, 8001, would be shared by every server
        # of the same user: SO_REUSEPORT), unless ``env`` names one.
        named = (env or {}).get("DLSERVE_GRPC_PORT")
        self.grpc_port = free_port() if named is None else int(named)
        env = {
            "DLSERVE_WORKERS": "1",
            "DLSERVE_MODEL_POLL_S": "0",
            **os.environ,
            "DLSERVE_GRPC_PORT": str(self.grpc_port),
            **(env or {}),
        }
        shared = Path(env.get("BENTOML_HOME") or Path.home() / "bentoml")
        self.home = private_home(shared)
        env["BENTOML_HOME"] = str(self.home)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"  # the Open Inference Protocol's gRPC
        log_fd, log_path = tempfile.mkstemp(prefix="dlserve-", suffix=".log")
        self._log = Path(log_path)
        command = [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            *([bento] if bento else []),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        os.close(log_fd)  # the child keeps its own copy

    def wait(self, probe: str = "/livez", timeout: float = 90) -> LocalServer:
        """Block until ``probe`` answers 200; raise with the server's log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.logs()}")
            if status(self.url + probe) == 200:
                return self
            time.sleep(0.3)
        raise TimeoutError(f"{probe} did not answer 200 within {timeout}s:\n{self.logs()}")

    def logs(self, tail: int | None = 4000) -> str:
        """The last ``tail`` characters the server printed (all with ``None``)."""
        text = self._log.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def stop(self) -> None:
        """Stop the server and its workers; remove the log."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        self._log.unlink(missing_ok=True)
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

"""A ``faceembed serve`` subprocess on a free 127.0.0.1 port, for tests, load and fault runs: start it, wait until
``/v1/health`` answers, kill it (``kill -9`` included), start it again on the same port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from faceembed.errors import FaceembedError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``with ServerProcess("sqlite:///f.db") as srv: srv.url`` -> ``http://127.0.0.1:PORT``. ``args``: more
    ``faceembed serve`` options; the server's output goes to ``log`` (a file) when given."""

    def __init__(self, db_url: str, port: int | None = None, args: tuple[str, ...] = (), log: str | Path | None = None,
                 threads: int | None = None):
        self.db_url, self.port, self.args = db_url, port or free_port(), tuple(args)
        self.log = Path(log) if log else None
        self.threads = threads
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> ServerProcess:
        """Start the server and wait until it answers ``/v1/health`` (a clear error naming its log otherwise)."""
        env = dict(os.environ, PYTHONFAULTHANDLER="1")  # SIGABRT of a hung server dumps its threads to the log
        if self.threads:
            env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115  (the child keeps it)
        cmd = [sys.executable, "-m", "faceembed", "serve", "--db", self.db_url, "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if self.log:
            out.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise FaceembedError(f"faceembed serve exited with {self.proc.returncode} before answering"
                                     + (f"; see {self.log}" if self.log else ""))
            try:
                if httpx.get(self.url + "/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise FaceembedError(f"faceembed serve did not answer /v1/health within {timeout:g} s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL, as ``kill -9``) to the server's process group (its workers too)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> ServerProcess:
        try:
            return self.start()
        except BaseException:
            self.kill()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

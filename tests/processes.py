"""``idnode`` as a separate process: ``idnode init`` a store, ``idnode serve`` it on a free port.

For tests that need a real server process (a client library that talks HTTP
from another thread, or a SIGKILL). The node logs to a file next to the store,
shown in the error when it does not come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20.0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "resolver.cli", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def init_store(store: Path, prefix: str, secret: str) -> None:
    """``idnode init``: create the store, home ``prefix``, make ``300:<prefix>/ADMIN``."""
    subprocess.run(
        _cli("init", "--store", str(store), "--prefix", prefix, "--admin-secret", secret),
        cwd=ROOT, env=_env(), check=True, capture_output=True, timeout=60,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One ``idnode serve`` process on a loopback port; start, kill -9, stop."""

    def __init__(self, store: Path, *extra_args: str, port: int | None = None) -> None:
        self.store = store
        self.extra_args = extra_args
        self.port = port or free_port()
        self.log_path = store.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        # Any free binary-protocol port: never clash with a node on 2641.
        args = _cli("serve", "--store", str(self.store), "--host", "127.0.0.1",
                    "--port", str(self.port), "--handle-port", "0", "--log-level", "WARNING",
                    *self.extra_args)
        if "--workers" not in self.extra_args:
            args += ["--workers", "1"]  # one process unless the test asks for more
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=log, stderr=log)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"idnode serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"idnode serve not healthy after {START_TIMEOUT}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, nothing flushed beyond what was committed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

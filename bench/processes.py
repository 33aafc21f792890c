"""Child processes of a benchmark: nodes, baselines, load generators.

Each child gets its own session (process group), so a Ctrl-C at the terminal
reaches only the runner, which then stops the load, scrapes what the servers
measured and stops them itself, in that order.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_tcp_port() -> int:
    """A port free for TCP and UDP alike: the Handle protocol listens on both."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


def idnode(*args: str) -> list[str]:
    """``idnode ...`` as this interpreter runs it (no import of resolver/ here)."""
    return [sys.executable, "-m", "resolver.cli", *args]


def child_env() -> dict[str, str]:
    """The project importable in children, whether or not it is pip-installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def pinned(cpus: int | str | None, argv: list[str]) -> list[str]:
    """Prefix ``argv`` with taskset so load and server do not share a core."""
    if cpus is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(cpus), *argv]


def spawn(argv: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, output to ``log`` (or discarded)."""
    out = log.open("ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=child_env(), start_new_session=True)
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the child's process group (locust forks workers), then SIGKILL."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout)
    _signal_group(proc, signal.SIGKILL)  # stragglers the leader left behind


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Path | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
                raise RuntimeError(f"{proc.args!r} did not start listening:\n{tail}") from None
            time.sleep(0.05)


@contextmanager
def listening(argv: list[str], port: int, log: Path | None = None
              ) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server until the block ends; yields once it accepts connections."""
    proc = spawn(argv, log)
    try:
        wait_for_port(proc, port, log)
        yield proc
    finally:
        stop(proc)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")" that ends the command name, utime and stime are fields 12 and 13.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def group_cpu_seconds(pgid: int) -> dict[int, float]:
    """CPU time of every live process in a process group (locust forks its workers)."""
    found: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if int(fields[2]) == pgid:  # field 5 of stat, the process group
            found[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return found


def cpu_layout() -> tuple[int | None, str | None]:
    """(server core, load cores): servers on core 0, load generators on the rest."""
    count = os.cpu_count() or 1
    if count < 2 or shutil.which("taskset") is None:
        return None, None
    return 0, f"1-{count - 1}" if count > 2 else "1"

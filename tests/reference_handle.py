"""The reference Handle.Net 9.3.1 server and client, run locally for interop tests.

Nothing of the reference distribution lives in this repository. It is found at
``$IDNODE_HANDLE_REF`` (default ``/opt/handle-ref/handle-9.3.1``: the unpacked
binary distribution, ``lib/handle-9.3.1.jar`` inside), with Java 17 on PATH and
the BouncyCastle jars either in its ``lib/`` or from Debian's ``libbcprov-java``,
``libbcpkix-java``, ``libbcutil-java`` (``/usr/share/java``). Two small Java
helpers written for these tests (no reference code in them) are compiled from
``$IDNODE_HANDLE_REF_INTEROP`` (default: ``tests/interop/`` in this repository):
``SeedStore.java`` (writes handles into a stopped server's BDB-JE store) and
``AdminCreate.java`` (a create with HS_SECKEY authentication, no session).

Everything stays on loopback. The reference client is given a configuration
folder (``-Dnet.handle.configDir``) holding

- ``config.dct``: ``"auto_update_root_info" = "no"`` (plus ``"no_udp_resolution" = "yes"``
  for TCP), so it never fetches root information from the network;
- ``resolver_site``: the site (JSON) of the server under test, listing only the
  interface to use (UDP or TCP) at ``127.0.0.1:PORT``;
- ``local_nas``: ``*``, so every prefix (and the root itself) is looked up at that site.

The reference server gets the same treatment for its own resolver, and
``"template_ns_override" = "yes"``: otherwise a miss (RC 100) makes it resolve the
prefix handle ``0.NA/<prefix>`` at the global root before answering.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_REF_HOME = "/opt/handle-ref/handle-9.3.1"
DEBIAN_JAVA = Path("/usr/share/java")
BC_JARS = ("bcprov", "bcpkix", "bcutil")
JAVA_TIMEOUT = 60.0
SERVER_START_TIMEOUT = 60.0


def ref_home() -> Path:
    return Path(os.environ.get("IDNODE_HANDLE_REF", DEFAULT_REF_HOME))


def interop_dir() -> Path:
    default = Path(__file__).resolve().parent / "interop"
    return Path(os.environ.get("IDNODE_HANDLE_REF_INTEROP", str(default)))


def _usable(jar: Path) -> bool:
    return jar.is_file() and jar.stat().st_size > 0  # a symlink to nothing is not


def classpath(*extra: Path) -> str:
    """The distribution's jars; Debian's BouncyCastle when the distribution lacks bcprov."""
    lib = ref_home() / "lib"
    jars = sorted(lib.glob("*.jar")) + sorted(lib.glob("*/*.jar"))
    if not any(j.name.startswith("bcprov") and _usable(j) for j in jars):
        # Mixing the distribution's bcpkix/bcutil 1.70 with another bcprov is asking for trouble.
        jars = [j for j in jars if not j.name.startswith(BC_JARS)]
        jars += [DEBIAN_JAVA / f"{name}.jar" for name in BC_JARS]
    return os.pathsep.join(str(p) for p in (*extra, *jars))


def missing_reason() -> str | None:
    """Why the reference tests cannot run here, or None."""
    home = ref_home()
    if shutil.which("java") is None:
        return "java not on PATH (the reference Handle.Net 9.3.1 needs Java 8+)"
    if not (home / "lib" / "handle-9.3.1.jar").is_file():
        return (f"reference Handle.Net 9.3.1 not found at {home} "
                "(set IDNODE_HANDLE_REF to the unpacked distribution)")
    jars = [Path(p) for p in classpath().split(os.pathsep)]
    if not any(j.name.startswith("bcprov") and _usable(j) for j in jars):
        return ("no bcprov jar in the distribution or /usr/share/java "
                "(apt-get install libbcprov-java libbcpkix-java libbcutil-java)")
    return None


def helpers_missing_reason() -> str | None:
    if shutil.which("javac") is None:
        return "javac not on PATH (needed for the Java test helpers)"
    for name in ("SeedStore.java", "AdminCreate.java"):
        if not (interop_dir() / name).is_file():
            return f"{name} not found in {interop_dir()} (set IDNODE_HANDLE_REF_INTEROP)"
    return None


def compile_helpers(out_dir: Path) -> Path:
    """javac the helpers into out_dir (once per test session); returns out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [str(interop_dir() / n) for n in ("SeedStore.java", "AdminCreate.java")]
    subprocess.run(["javac", "-nowarn", "-cp", classpath(), "-d", str(out_dir), *sources],
                   check=True, capture_output=True, timeout=120)
    return out_dir


# --- ports -----------------------------------------------------------------------------

def free_udp_tcp_port() -> int:
    """A loopback port free for both TCP and UDP (the Handle protocol uses one number)."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both TCP and UDP")


def wait_tcp(port: int, timeout: float, alive: Callable[[], bool] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"process died before port {port} opened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


# --- site descriptions and client configuration ------------------------------------------

def site_json(host: str, interfaces: tuple[tuple[str, int], ...], *,
              pubkey: bytes | None = None, desc: str = "interop target") -> dict[str, object]:
    """A siteinfo.json document: one server at host, one interface per (protocol, port).

    TCP and HTTP interfaces are query+admin, UDP query only (admin is never done
    over UDP). ``pubkey`` is the server's Handle-encoded public key (pubkey.bin);
    resolution does not need it, session setup and signed replies do.
    """
    server: dict[str, object] = {"serverId": 1, "address": host}
    if pubkey is not None:
        server["publicKey"] = {"format": "hex", "value": pubkey.hex()}
    server["interfaces"] = [
        {"query": True, "admin": proto != "UDP", "protocol": proto, "port": port}
        for proto, port in interfaces
    ]
    return {
        "version": 1, "protocolVersion": "2.11", "serialNumber": 1,
        "primarySite": True, "multiPrimary": False,
        "attributes": [{"name": "desc", "value": desc}],
        "servers": [server],
    }


def write_client_config(directory: Path, port: int, protocol: str, *, host: str = "127.0.0.1",
                        pubkey: bytes | None = None) -> Path:
    """A reference-client config folder that sends everything to host:port over one protocol."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = ['"auto_update_root_info" = "no"']
    if protocol == "TCP":
        lines.append('"no_udp_resolution" = "yes"')
    (directory / "config.dct").write_text("{\n  " + "\n  ".join(lines) + "\n}\n")
    site = site_json(host, ((protocol, port),), pubkey=pubkey)
    (directory / "resolver_site").write_text(json.dumps(site, indent=2) + "\n")
    (directory / "local_nas").write_text("*\n")
    return directory


# --- the reference client -----------------------------------------------------------------

_VALUE_LINE = re.compile(r'^\s*index=(\d+) type=(\S*) ([rw-]{4}) "(.*)"$')
_ERROR_LINE = re.compile(r"^Error\((\d+)\): (.*)$")


@dataclass
class TraceResult:
    """What ``net.handle.apps.simple.HDLTrace HANDLE`` printed.

    stdout: ``Got Response:`` + the response line + one ``index=N type=T rwr- "data"``
    line per value (binary data as upper-case hex), or ``Got Error:`` +
    ``Error(RC): TEXT``. stderr: the trace, ``sending HDL-UDP request (...) to
    127.0.0.1:PORT`` / ``received HDL-UDP response: ...`` (HDL-TCP for TCP), and
    any exception. The exit status is 0 either way.
    """

    rc: int | None
    values: list[tuple[int, str, str, str]] = field(default_factory=list)
    error: str = ""
    stdout: str = ""
    stderr: str = ""

    def value(self, index: int) -> tuple[int, str, str, str] | None:
        return next((v for v in self.values if v[0] == index), None)


def parse_trace(stdout: str, stderr: str) -> TraceResult:
    result = TraceResult(rc=None, stdout=stdout, stderr=stderr)
    lines = stdout.splitlines()
    if "Got Response: " in lines or "Got Response:" in lines:
        result.rc = 1
        for line in lines:
            m = _VALUE_LINE.match(line)
            if m:
                result.values.append((int(m[1]), m[2], m[3], m[4]))
    for line in lines:
        m = _ERROR_LINE.match(line.strip())
        if m:
            result.rc, result.error = int(m[1]), m[2]
    return result


_offline_dir: Path | None = None


def offline_config_dir() -> Path:
    """A client config folder for tools that should resolve nothing at all.

    Any ``HandleResolver`` a tool creates would otherwise read ``~/.handle`` and,
    without ``"auto_update_root_info" = "no"``, send a root-info request to the
    global root at once; here every lookup goes to 127.0.0.1:9 (discard) instead.
    """
    global _offline_dir
    if _offline_dir is None:
        _offline_dir = write_client_config(
            Path(tempfile.mkdtemp(prefix="handle-offline-")), 9, "TCP")
    return _offline_dir


def java(
    config_dir: Path | None, main_class: str, *args: str, extra_cp: tuple[Path, ...] = (),
    timeout: float = JAVA_TIMEOUT, stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a class of the distribution; never without a config folder that stays on loopback."""
    config_dir = config_dir or offline_config_dir()
    config = (config_dir / "config.dct").read_text()
    assert '"auto_update_root_info" = "no"' in config, f"{config_dir}: would contact the root"
    assert (config_dir / "local_nas").read_text().strip() == "*", config_dir
    cmd = ["java", f"-Dnet.handle.configDir={config_dir}"]
    cmd += ["-cp", classpath(*extra_cp), main_class, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin,
                          check=False)


def ref_resolve(config_dir: Path, handle: str) -> TraceResult:
    """The stock command-line resolver (``hdl-qresolver``) with the given config folder."""
    done = java(config_dir, "net.handle.apps.simple.HDLTrace", handle)
    return parse_trace(done.stdout, done.stderr)


def ref_get_site_info(host: str, port: int, work: Path) -> dict[str, object]:
    """GET_SITE_INFO over TCP (``hdl-getsiteinfo``), converted to siteinfo.json form."""
    # GetSiteInfo talks to host:port directly, but its HandleResolver reads a config too.
    write_client_config(work, port, "TCP", host=host)
    out = work / "site.bin"
    got = java(work, "net.handle.apps.tools.GetSiteInfo", host, str(port), str(out))
    if not out.is_file():
        raise AssertionError(f"GetSiteInfo wrote nothing:\n{got.stdout}\n{got.stderr}")
    conv = java(None, "net.handle.apps.simple.SiteInfoConverter", str(out))
    return json.loads(conv.stdout)


def ref_admin_create(config_dir: Path, helpers: Path, identity: str, secret: str,
                     handle: str, *values: str) -> subprocess.CompletedProcess[str]:
    """Create ``handle`` (HS_ADMIN 100 + TYPE=DATA values at 1..n) with HS_SECKEY auth.

    stdout ``RESULT rc=1 ...`` on success (exit 0), ``RESULT rc=403 Error(403): ...`` etc.
    """
    return java(config_dir, "AdminCreate", identity, secret, handle, *values,
                extra_cp=(helpers,))


# --- the reference server -----------------------------------------------------------------

SERVER_CONFIG = """{{
  "server_type" = "server"
  "auto_update_root_info" = "no"
  "no_udp_resolution" = "no"
  "interfaces" = ( {interfaces} )
  "hdl_udp_config" = {{
    "bind_address" = "127.0.0.1"
    "bind_port" = "{port}"
    "num_threads" = "4"
    "log_accesses" = "yes"
  }}
  "hdl_tcp_config" = {{
    "bind_address" = "127.0.0.1"
    "bind_port" = "{port}"
    "num_threads" = "4"
    "log_accesses" = "yes"
  }}
  "hdl_http_config" = {{
    "bind_address" = "127.0.0.1"
    "bind_port" = "{http_port}"
    "num_threads" = "4"
    "log_accesses" = "yes"
  }}
  "log_save_config" = {{
    "log_save_directory" = "logs"
    "log_save_interval" = "Never"
  }}
  "server_config" = {{
    "this_server_id" = "1"
    "server_admins" = ( "300:{prefix}/ADMIN" )
    "replication_admins" = ( )
    "auto_homed_prefixes" = ( "0.NA/{prefix}" )
    "server_admin_full_access" = "yes"
    "case_sensitive" = "no"
    "max_auth_time" = "60000"
    "max_session_time" = "86400000"
    "allow_recursion" = "no"
    "template_ns_override" = "yes"
  }}
}}
"""


class ReferenceServer:
    """Handle.Net 9.3.1 ``net.handle.server.Main`` in ``directory`` on 127.0.0.1.

    ``prepare`` makes an unencrypted RSA server key (``hdl-keygen``, answering
    "n" to the encryption question), ``siteinfo.json``, ``config.dct``, a resolver
    config folder pointing only at itself, and seeds ``<prefix>/ADMIN`` (HS_ADMIN
    100, HS_SECKEY 300 = secret) plus ``seed`` triples (handle, type, data).
    """

    def __init__(self, directory: Path, helpers: Path, prefix: str, secret: str, *,
                 port: int | None = None, http_port: int | None = None) -> None:
        self.dir = directory
        self.helpers = helpers
        self.prefix = prefix
        self.secret = secret
        self.port = port or free_udp_tcp_port()
        self.http_port = http_port  # None: no HTTP interface (faster start)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "server.out"

    @property
    def pubkey(self) -> bytes:
        return (self.dir / "pubkey.bin").read_bytes()

    def prepare(self, seed: tuple[tuple[str, str, str], ...] = ()) -> ReferenceServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        keygen = java(None, "net.handle.apps.tools.KeyGenerator",
                      str(self.dir / "privkey.bin"), str(self.dir / "pubkey.bin"), stdin="n\n")
        if keygen.returncode != 0 or not (self.dir / "privkey.bin").is_file():
            raise RuntimeError(f"hdl-keygen failed:\n{keygen.stdout}\n{keygen.stderr}")
        ifaces = [("TCP", self.port), ("UDP", self.port)]
        if self.http_port:
            ifaces.append(("HTTP", self.http_port))
        site = site_json("127.0.0.1", tuple(ifaces), pubkey=self.pubkey,
                         desc="idnode interop reference server")
        (self.dir / "siteinfo.json").write_text(json.dumps(site, indent=2) + "\n")
        interfaces = " ".join(f'"hdl_{proto.lower()}"' for proto, _ in ifaces)
        (self.dir / "config.dct").write_text(SERVER_CONFIG.format(
            interfaces=interfaces, port=self.port, http_port=self.http_port or 0,
            prefix=self.prefix))
        # The server's own resolver: never the global root; anything it looks up goes to itself.
        write_client_config(self.dir / "resolver", self.port, "TCP", pubkey=self.pubkey)
        args = [str(self.dir), self.prefix, self.secret]
        for triple in seed:
            args += list(triple)
        seeded = java(None, "SeedStore", *args, extra_cp=(self.helpers,))
        if seeded.returncode != 0:
            raise RuntimeError(f"SeedStore failed:\n{seeded.stdout}\n{seeded.stderr}")
        return self

    def start(self) -> ReferenceServer:
        cmd = ["java", f"-Dnet.handle.configDir={self.dir / 'resolver'}", "-Xmx256M",
               "-cp", classpath(), "net.handle.server.Main", str(self.dir)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            wait_tcp(self.port, SERVER_START_TIMEOUT, alive=lambda: self.proc.poll() is None)
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while "Starting TCP request handlers" not in self.log():
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("reference server did not start its handlers")
                time.sleep(0.1)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n{self.log()}") from None
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (the server's shutdown hook waits for its handler threads), then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

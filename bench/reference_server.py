"""The reference Handle.Net 9.3.1 server as a benchmark target, on loopback only.

Installed as for the interop tests (tests/interop/README.md): the binary
distribution at ``$IDNODE_HANDLE_REF`` (default ``/opt/handle-ref/handle-9.3.1``),
Java 17 with ``javac``, BouncyCastle from the distribution or Debian's
``/usr/share/java``. Records are written into its BDB-JE store before it starts
by ``tests/interop/SeedStore.java`` (our helper; compiled here). The server's
own resolver is pointed at itself so it never contacts the global root.

The HTTP interface is configured ``http_only``: plain HTTP on its port, as
idnode serves it (by default the reference unifies HTTP and HTTPS on the port and
answers the REST API over TLS only).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.processes import ROOT, pinned, spawn, stop, wait_for_port

DEFAULT_REF_HOME = "/opt/handle-ref/handle-9.3.1"
DEBIAN_JAVA = Path("/usr/share/java")
BC_JARS = ("bcprov", "bcpkix", "bcutil")
HELPERS = ROOT / "tests" / "interop"
START_TIMEOUT = 90.0


def ref_home() -> Path:
    return Path(os.environ.get("IDNODE_HANDLE_REF", DEFAULT_REF_HOME))


def classpath(*extra: Path) -> str:
    """The distribution's jars; Debian's BouncyCastle when the distribution lacks bcprov."""
    lib = ref_home() / "lib"
    jars = sorted(lib.glob("*.jar")) + sorted(lib.glob("*/*.jar"))
    if not any(j.name.startswith("bcprov") and j.is_file() and j.stat().st_size for j in jars):
        jars = [j for j in jars if not j.name.startswith(BC_JARS)]
        jars += [DEBIAN_JAVA / f"{name}.jar" for name in BC_JARS]
    return os.pathsep.join(str(p) for p in (*extra, *jars))


def missing_reason() -> str | None:
    """Why the reference server cannot run here, or None."""
    for tool in ("java", "javac"):
        if shutil.which(tool) is None:
            return f"{tool} not on PATH"
    if not (ref_home() / "lib" / "handle-9.3.1.jar").is_file():
        return f"reference Handle.Net 9.3.1 not found at {ref_home()} (tests/interop/README.md)"
    if not any(Path(p).name.startswith("bcprov") and Path(p).is_file()
               for p in classpath().split(os.pathsep)):
        return "no bcprov jar (apt-get install libbcprov-java libbcpkix-java libbcutil-java)"
    return None


def _java(*args: str, extra_cp: tuple[Path, ...] = (), config_dir: Path,
          stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["java", f"-Dnet.handle.configDir={config_dir}", "-cp", classpath(*extra_cp), *args]
    return subprocess.run(cmd, capture_output=True, text=True, input=stdin, timeout=300,
                          check=False)


def _site(port: int, http_port: int, pubkey: bytes | None) -> dict[str, object]:
    server: dict[str, object] = {"serverId": 1, "address": "127.0.0.1"}
    if pubkey is not None:
        server["publicKey"] = {"format": "hex", "value": pubkey.hex()}
    server["interfaces"] = [
        {"query": True, "admin": True, "protocol": "TCP", "port": port},
        {"query": True, "admin": False, "protocol": "UDP", "port": port},
        {"query": True, "admin": True, "protocol": "HTTP", "port": http_port},
    ]
    return {"version": 1, "protocolVersion": "2.11", "serialNumber": 1, "primarySite": True,
            "multiPrimary": False, "attributes": [{"name": "desc", "value": "idnode bench"}],
            "servers": [server]}


def _loopback_client_config(directory: Path, port: int) -> Path:
    """A client config folder sending every lookup (the root's too) to 127.0.0.1:port."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.dct").write_text(
        '{\n  "auto_update_root_info" = "no"\n  "no_udp_resolution" = "yes"\n}\n')
    site = _site(port, port, None)
    site["servers"][0]["interfaces"] = [  # type: ignore[index]
        {"query": True, "admin": True, "protocol": "TCP", "port": port}]
    (directory / "resolver_site").write_text(json.dumps(site, indent=2) + "\n")
    (directory / "local_nas").write_text("*\n")
    return directory


# Threads as hdl-setup-server writes them; access logs off (idnode logs no accesses either).
SERVER_CONFIG = """{{
  "server_type" = "server"
  "auto_update_root_info" = "no"
  "interfaces" = ( "hdl_udp" "hdl_tcp" "hdl_http" )
  "hdl_udp_config" = {{
    "bind_address" = "127.0.0.1"
    "bind_port" = "{port}"
    "num_threads" = "15"
    "log_accesses" = "no"
  }}
  "hdl_tcp_config" = {{
    "bind_address" = "127.0.0.1"
    "bind_port" = "{port}"
    "num_threads" = "15"
    "log_accesses" = "no"
  }}
  "hdl_http_config" = {{
    "bind_address" = "127.0.0.1"
    "bind_port" = "{http_port}"
    "num_threads" = "15"
    "http_only" = "yes"
    "log_accesses" = "no"
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
    "allow_recursion" = "no"
    "template_ns_override" = "yes"
  }}
}}
"""


@dataclass
class ReferenceServer:
    """A prepared reference server directory; ``start`` runs it on ``cpu``."""

    directory: Path
    port: int
    http_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "server.out"

    def start(self, cpu: int | None, heap: str = "512M") -> subprocess.Popen[bytes]:
        argv = ["java", f"-Dnet.handle.configDir={self.directory / 'resolver'}", f"-Xmx{heap}",
                "-cp", classpath(), "net.handle.server.Main", str(self.directory)]
        self.proc = spawn(pinned(cpu, argv), self.log_path)  # taskset execs java: same pid
        try:
            wait_for_port(self.proc, self.port, self.log_path)
            wait_for_port(self.proc, self.http_port, self.log_path)
            deadline = time.monotonic() + START_TIMEOUT
            while "Starting UDP request handlers" not in self.log_path.read_text(errors="replace"):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the reference server did not start its handlers:\n"
                                       + self.log_path.read_text(errors="replace")[-3000:])
                time.sleep(0.1)
        except BaseException:
            stop(self.proc)
            raise
        return self.proc

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def prepare(directory: Path, port: int, http_port: int, prefix: str, secret: str,
            records: Sequence[tuple[str, str, str]]) -> ReferenceServer:
    """Key pair, site, config and a store holding ``records`` (handle, type, string data)."""
    directory.mkdir(parents=True, exist_ok=True)
    offline = _loopback_client_config(directory / "offline", 9)  # discard port: nothing answers
    keygen = _java("net.handle.apps.tools.KeyGenerator", str(directory / "privkey.bin"),
                   str(directory / "pubkey.bin"), config_dir=offline, stdin="n\n")
    if not (directory / "privkey.bin").is_file():
        raise RuntimeError(f"hdl-keygen failed:\n{keygen.stdout}\n{keygen.stderr}")
    pubkey = (directory / "pubkey.bin").read_bytes()
    site = _site(port, http_port, pubkey)
    (directory / "siteinfo.json").write_text(json.dumps(site, indent=2) + "\n")
    (directory / "config.dct").write_text(
        SERVER_CONFIG.format(port=port, http_port=http_port, prefix=prefix))
    _loopback_client_config(directory / "resolver", port)

    classes = directory / "helpers"
    classes.mkdir(exist_ok=True)
    subprocess.run(["javac", "-nowarn", "-cp", classpath(), "-d", str(classes),
                    str(HELPERS / "SeedStore.java")], check=True, capture_output=True,
                   timeout=300)
    # Thousands of records: a java @argfile, not argv. The launcher expands @files only
    # before the main class, so the class name goes in the file too.
    args = ["SeedStore", str(directory), prefix, secret]
    for triple in records:
        args += list(triple)
    args_file = directory / "seed.args"
    args_file.write_text("\n".join(_quote(a) for a in args) + "\n")
    seeded = _java(f"@{args_file}", extra_cp=(classes,), config_dir=offline)
    if seeded.returncode != 0:
        raise RuntimeError(f"SeedStore failed:\n{seeded.stdout}\n{seeded.stderr}")
    return ReferenceServer(directory, port, http_port)


def _quote(arg: str) -> str:
    """One argument of a java @argfile (double-quoted, backslashes and quotes escaped)."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'

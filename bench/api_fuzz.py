"""Run schemathesis over /api/openapi.json against a live node, with credentials.

    python -m bench.api_fuzz --max-examples 20            # short (make test runs this)
    python -m bench.api_fuzz --max-examples 4000 --workers 4   # long: >= 100k requests

Starts a fresh node (embedded store, prefix 88.100.1, an SNMS account), writes
a schemathesis config that authenticates Handle REST operations with Basic
``300:88.100.1/ADMIN`` and SNMS ones with a token this script fetched from
``/identity/token`` before the run, and runs every check against the whole document: no 5xx,
no status code, content type, header or body the document does not allow.
Prints schemathesis' report; exit status is schemathesis'.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.processes import child_env, free_port, idnode, listening

PREFIX = "88.100.1"
ADMIN_SECRET = "fuzz-admin-secret"
ACCOUNT = "fuzz"
ACCOUNT_PASSWORD = "fuzz-password-1"


@dataclass(frozen=True)
class FuzzResult:
    returncode: int
    output: str
    requests: int | None


def config_toml(workdir: Path, snms_token: str) -> str:
    login = f"300%3A{PREFIX}/ADMIN"
    # One token for the whole run (they last 24 h), fetched before it: the fuzzer
    # also sends wrong passwords for the same account from the same address, and
    # the node's login throttle (resolver/throttle.py) would then refuse a
    # re-login by schemathesis' dynamic auth, as it should refuse any guesser.
    return f"""
[auth.openapi.handleBasic]
username = "{login}"
password = "{ADMIN_SECRET}"

[auth.openapi.snmsToken]
bearer = "{snms_token}"

[generation]
database = "none"

# Handle.Net answers some schema-valid requests with 400: a prefix not homed here
# (RC 301), ?index= not matching the body (RC 4), a value already gone (RC 200).
# 503 is load shedding (RC 3), documented everywhere; every other 5xx is a bug.
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", 503]

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", 400, 401, 403, 404, 409, 429, 503]

# SNMS sends every envelope with HTTP 200 (the status is in the body, as real
# SNMS servers do), so HTTP-status checks of rejection do not apply to it.
[[operations]]
include-tag = "SNMS v5"
checks.negative_data_rejection.enabled = false
checks.ignored_auth.enabled = false
checks.missing_required_header.enabled = false

# Its body is msgpack, which schemathesis cannot generate (protocol/stats_report.py
# has its own malformed-input tests).
[[operations]]
include-operation-id = "receiveStatsReport"
enabled = false

# A batch answers 200 with a result per item, failed items included.
[[operations]]
include-operation-id = "batchRegister"
checks.negative_data_rejection.enabled = false

# Unknown methods on a handle answer 501 RC 4, as Handle.Net does, not 405; and
# a malformed handle is refused (400) before credentials are looked at.
[[operations]]
include-path = "/api/handles/{{handle}}"
checks.unsupported_method.enabled = false
checks.missing_required_header.enabled = false
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", 501, 503]

[reports]
directory = "{workdir / "report"}"
"""


def prepare_store(store: Path) -> None:
    env = child_env()
    for argv in (
        idnode("init", "--store", str(store), "--prefix", PREFIX, "--admin-secret", ADMIN_SECRET),
        idnode("account", "add", ACCOUNT, "--prefix", PREFIX, "--password", ACCOUNT_PASSWORD,
               "--store", str(store)),
    ):
        subprocess.run(argv, env=env, check=True, capture_output=True)


def run(*, max_examples: int, seed: int, workers: int, workdir: Path,
        extra: list[str] | None = None, timeout: float | None = None) -> FuzzResult:
    store = workdir / "node.db"
    for old in workdir.glob("node.db*"):  # a kept directory from an earlier run
        old.unlink()
    prepare_store(store)
    port = free_port()
    config = workdir / "schemathesis.toml"
    serve = idnode("serve", "--store", str(store), "--port", str(port), "--no-handle-protocol",
                   "--log-level", "WARNING", "--workers", "1")
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if schemathesis is None:
        raise SystemExit("schemathesis is not installed: pip install -e '.[dev]'")
    argv = [
        schemathesis, "--config-file", str(config), "run",
        f"http://127.0.0.1:{port}/api/openapi.json",
        "--max-examples", str(max_examples),
        "--seed", str(seed),
        "--workers", str(workers),
        "--request-timeout", "10",
        "--no-color",
        "--report", "ndjson",
        "--report-ndjson-path", str(workdir / "events.ndjson"),
        *(extra or []),
    ]
    with listening(serve, port, workdir / "node.log"):
        config.write_text(config_toml(workdir, snms_login(f"http://127.0.0.1:{port}")))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=child_env())
    output = done.stdout + done.stderr
    return FuzzResult(done.returncode, output, count_requests(workdir / "events.ndjson"))


def snms_login(base_url: str) -> str:
    """A token of the fuzz account from ``POST /identity/token``."""
    body = json.dumps({"username": ACCOUNT, "password": ACCOUNT_PASSWORD}).encode()
    request = urllib.request.Request(f"{base_url}/identity/token", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        envelope = json.loads(reply.read())
    if envelope.get("status") != 1:
        raise SystemExit(f"SNMS login of {ACCOUNT!r} failed: {envelope}")
    return str(envelope["data"]["token"])


def count_requests(events: Path) -> int | None:
    """Requests schemathesis sent, from its NDJSON event stream."""
    if not events.exists():
        return None
    total = 0
    for line in events.read_text().splitlines():
        if '"ScenarioFinished"' not in line:
            continue
        event = json.loads(line).get("ScenarioFinished", {})
        recorder = event.get("recorder") or {}
        total += len(recorder.get("interactions") or {})
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep", help="keep the node's store, log and reports in this directory")
    args, extra = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="idnode-fuzz-") as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = run(max_examples=args.max_examples, seed=args.seed, workers=args.workers,
                     workdir=workdir, extra=extra)
    print(result.output)
    print(f"requests sent: {result.requests}")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())

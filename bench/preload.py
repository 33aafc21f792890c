"""A store with N benchmark identifiers, made with ``idnode init`` and one ``idnode import``,
and the SNMS account ``bench`` (``idnode account add``) for register-batch-snms."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.processes import ROOT, child_env, idnode
from bench.workload import write_jsonl

PREFIX = "88.100.1"
SECRET = "bench-secret"
SNMS_USER = "bench"  # SNMS account of register-batch-snms, password SECRET


@dataclass(frozen=True)
class PreloadedStore:
    path: Path
    prefix: str
    secret: str
    count: int
    import_seconds: float


def prepare_store(work: Path, count: int, *, prefix: str = PREFIX, secret: str = SECRET,
                  seed: int = 1) -> PreloadedStore:
    store = work / "bench.db"
    subprocess.run(idnode("init", "--store", str(store), "--prefix", prefix,
                          "--admin-secret", secret),
                   check=True, stdout=subprocess.DEVNULL, cwd=ROOT, env=child_env())
    subprocess.run(idnode("account", "add", SNMS_USER, "--prefix", prefix, "--password", secret,
                          "--store", str(store)),
                   check=True, stdout=subprocess.DEVNULL, cwd=ROOT, env=child_env())
    seconds = 0.0
    if count:
        jsonl = work / "preload.jsonl"
        write_jsonl(jsonl, prefix, count, seed)
        t0 = time.perf_counter()
        subprocess.run(idnode("import", "--store", str(store), str(jsonl)), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                       env=child_env())
        seconds = time.perf_counter() - t0
        jsonl.unlink()
    return PreloadedStore(store, prefix, secret, count, seconds)

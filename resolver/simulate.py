"""``idnode simulate``: the whole resolution hierarchy on one machine.

Starts real node processes on loopback: one top-level, one secondary per
industry (electronics, steel, petrochemicals, food, apparel, equipment; the
first ``--secondaries`` of them) and one recursive node. Stores are prepared
offline (``idnode delegate`` at the top-level, ``idnode init`` of the
industry and enterprise prefixes at each secondary); everything after that
goes through the nodes' own APIs: secondaries home their site at the
top-level, and the identifiers are registered in batches (``POST
/api/handles``) with each enterprise's credentials. Then it prints the
topology and credentials and waits for Ctrl-C, which stops every node.

Identifiers form supply chains across enterprises and secondaries: raw
materials (steel, petrochemicals) → parts (electronics) → products (food,
apparel, equipment), linked by ``TRACE.material`` and ``TRACE.component``
values (README, "Traceability: idnode trace"). Everything, secrets included,
follows from ``--seed``: the same seed gives the same identifiers, values and
credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from resolver import admin_tasks

READY_TIMEOUT = 30.0
# The link from a record to what it was made of, by the source's tier
# (README, "Traceability: idnode trace", for the format).
TRACE_RELATION = {0: "TRACE.material", 1: "TRACE.component"}
STOP_TIMEOUT = 10.0
BATCH = 2000  # POST /api/handles takes at most this many records


@dataclasses.dataclass(frozen=True)
class Industry:
    name: str
    prefix: str
    tier: int  # 0 raw material, 1 part, 2 product
    kind: str
    items: tuple[tuple[str, str], ...]  # (code, product name)
    sources: tuple[str, ...]  # industries whose identifiers this one is made from
    companies: tuple[str, ...]


# Prefixes are illustrative (88.101-88.106), not real allocations.
INDUSTRIES: tuple[Industry, ...] = (
    Industry("electronics", "88.101", 1, "part",
             (("PCB", "PCB assembly"), ("PWR", "power module"), ("SNS", "pressure sensor")),
             ("steel", "petrochemicals"),
             ("Shenzhen Huaxin Electronics", "Suzhou Ruida Microsystems",
              "Dongguan Kaiyuan Circuits", "Xiamen Hongtai Components")),
    Industry("steel", "88.102", 0, "raw-material",
             (("HRC", "hot-rolled coil"), ("BIL", "steel billet"), ("WRD", "wire rod")),
             (),
             ("Tangshan Iron & Steel Works", "Anshan Special Steel", "Baotou Alloy Steel",
              "Handan Rolling Mill")),
    Industry("petrochemicals", "88.103", 0, "raw-material",
             (("PPR", "polypropylene resin"), ("PET", "polyester chip"), ("ETH", "ethylene")),
             (),
             ("Maoming Petrochemical", "Zhenhai Refining", "Yanshan Polymer Co.",
              "Dushanzi Chemical")),
    Industry("food", "88.104", 2, "product",
             (("CAN", "canned peaches"), ("OIL", "bottled peanut oil"), ("MLK", "UHT milk")),
             ("steel", "petrochemicals"),
             ("Qingdao Haiyue Foods", "Inner Mongolia Caoyuan Dairy", "Shandong Golden Harvest",
              "Fujian Orchard Canning")),
    Industry("apparel", "88.105", 2, "product",
             (("JKT", "polyester jacket"), ("TSH", "sports T-shirt"), ("UNF", "work uniform")),
             ("petrochemicals", "electronics"),
             ("Ningbo Shanshan Garments", "Hangzhou Silkroad Apparel",
              "Jiangsu Yunfan Textiles", "Guangzhou Baiyun Uniforms")),
    Industry("equipment", "88.106", 2, "product",
             (("CNC", "CNC lathe"), ("PMP", "industrial pump"), ("CMP", "air compressor")),
             ("electronics", "steel"),
             ("Shenyang Machine Tool Works", "Dalian Heavy Pumps", "Wuxi Precision Equipment",
              "Jinan Compressor Co.")),
)


@dataclasses.dataclass
class Enterprise:
    industry: Industry
    prefix: str
    name: str
    secret: str
    domain: str

    @property
    def admin(self) -> str:
        return f"300:{self.prefix}/ADMIN"


@dataclasses.dataclass
class NodeProcess:
    role: str
    name: str
    store: Path
    port: int
    handle_port: int
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.store.with_suffix(".log")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--secondaries", type=int, default=len(INDUSTRIES),
                   help=f"secondary nodes, one per industry (1-{len(INDUSTRIES)})")
    p.add_argument("--enterprises", type=int, default=3, help="enterprises per secondary")
    p.add_argument("--ids-per-enterprise", type=int, default=20,
                   help="identifiers registered per enterprise")
    p.add_argument("--seed", type=int, default=1, help="same seed, same data and credentials")
    p.add_argument("--base-port", type=int, default=0,
                   help="first of the consecutive ports used (2 per node); 0 = any free ports")
    p.add_argument("--dir", help="where the stores and logs go (default: a temporary "
                                 "directory, removed at exit)")
    p.add_argument("--stats-interval", type=float, default=10.0,
                   help="seconds between the secondaries' statistics reports to the top-level")
    p.add_argument("--once", action="store_true",
                   help="set up, print, check one trace through the recursive node, and stop")


def simulate(args: argparse.Namespace) -> int:
    if not 1 <= args.secondaries <= len(INDUSTRIES):
        raise admin_tasks.CommandError(f"--secondaries must be 1-{len(INDUSTRIES)}")
    if args.enterprises < 1 or args.ids_per_enterprise < 1:
        raise admin_tasks.CommandError("--enterprises and --ids-per-enterprise must be >= 1")
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="idnode-sim-"))
    workdir.mkdir(parents=True, exist_ok=True)
    simulation = Simulation(args, workdir)
    try:
        return asyncio.run(simulation.run())
    finally:
        simulation.stop_all()
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)


class Simulation:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.industries = INDUSTRIES[: args.secondaries]
        self.nodes: list[NodeProcess] = []
        self.enterprises: list[Enterprise] = []
        self.delegation_secrets: dict[str, str] = {}
        self.industry_secrets: dict[str, str] = {}
        self._ports = self._port_source()

    def _secret(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def _port_source(self) -> Iterator[int]:
        """``--base-port`` and up, or free ports (each free for TCP and UDP at once)."""
        count = 2 * (len(self.industries) + 2)
        if self.args.base_port:
            yield from range(self.args.base_port, self.args.base_port + count)
            return
        held: list[socket.socket] = []
        ports: list[int] = []
        try:
            while len(ports) < count:
                tcp = socket.socket()
                held.append(tcp)
                tcp.bind(("127.0.0.1", 0))
                port = tcp.getsockname()[1]
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(udp)
                with contextlib.suppress(OSError):
                    udp.bind(("127.0.0.1", port))
                    ports.append(port)
        finally:
            for sock in held:
                sock.close()
        yield from ports

    def _node(self, role: str, name: str, *extra: str) -> NodeProcess:
        port, handle_port = next(self._ports), next(self._ports)
        node = NodeProcess(role, name, self.workdir / f"{name}.db", port, handle_port, extra)
        self.nodes.append(node)
        return node

    # -- set-up ------------------------------------------------------------------

    async def run(self) -> int:
        await self._prepare_stores()
        top = self._node("top-level", "top-level")
        self._start(top)
        await self._wait_ready(top)
        secondaries = []
        for industry in self.industries:
            identity = f"300:0.NA/{industry.prefix}"
            secret = self.delegation_secrets[industry.prefix]
            # One delegated identity homes the node and reports its statistics.
            node = self._node(
                "secondary", f"secondary-{industry.name}",
                "--home-at", top.url, "--home-auth", identity, "--home-secret", secret,
                "--stats-upstream", top.url, "--stats-identity", identity,
                "--stats-interval", str(self.args.stats_interval),
            )
            secondaries.append((industry, node))
            self._start(node, {"IDNODE_STATS_SECRET": secret})
        recursive = self._node("recursive", "recursive", "--top-level",
                               f"127.0.0.1:{top.handle_port}")
        self._start(recursive)
        for _, node in secondaries:
            await self._wait_ready(node)
        await self._wait_ready(recursive)
        async with aiohttp.ClientSession() as session:
            for industry, _ in secondaries:
                await self._wait_homed(session, top, industry.prefix)
            started = time.perf_counter()
            records = self._generate()
            count = await self._register(session, dict((i.prefix, n) for i, n in secondaries),
                                         records)
            took = time.perf_counter() - started
            example = self._example_chain(records)
            self._print(top, secondaries, recursive, count, took, example)
            if self.args.once:
                return await self._check(session, recursive, example)
        await self._wait_for_signal()
        return 0

    async def _prepare_stores(self) -> None:
        top_store = str(self.workdir / "top-level.db")
        with contextlib.redirect_stdout(io.StringIO()):
            for industry in self.industries:
                self.delegation_secrets[industry.prefix] = secret = self._secret()
                await admin_tasks.delegate(top_store, industry.prefix, secret)
                store = str(self.workdir / f"secondary-{industry.name}.db")
                self.industry_secrets[industry.prefix] = secret = self._secret()
                await admin_tasks.init(store, industry.prefix, secret, False)
                names = list(industry.companies)
                self.rng.shuffle(names)
                for n in range(1, self.args.enterprises + 1):
                    name = names[(n - 1) % len(names)]
                    if n > len(names):
                        name = f"{name} Plant {n // len(names) + 1}"
                    slug = "".join(c for c in name.lower().split()[0] if c.isalnum())
                    enterprise = Enterprise(industry, f"{industry.prefix}.{n}", name,
                                            self._secret(), f"{slug}{n}.example.cn")
                    await admin_tasks.init(store, enterprise.prefix, enterprise.secret, False)
                    self.enterprises.append(enterprise)

    def _start(self, node: NodeProcess, extra_env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "resolver.cli", "serve", "--store", str(node.store),
                   "--role", node.role, "--port", str(node.port),
                   "--handle-port", str(node.handle_port), *node.extra]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        env.update(extra_env or {})
        with open(node.log, "ab") as log:
            # Own process group: Ctrl-C reaches the simulator, which stops the nodes in order.
            node.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    async def _wait_ready(self, node: NodeProcess) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if node.proc is not None and node.proc.poll() is not None:
                    break
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{node.url}/metrics") as reply:
                        if reply.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise admin_tasks.CommandError(
            f"{node.name} did not start; its log ({node.log}):\n{_tail(node.log)}")

    async def _wait_homed(self, session: aiohttp.ClientSession, top: NodeProcess,
                          prefix: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            async with session.get(f"{top.url}/api/handles/0.NA/{prefix}",
                                   params={"type": "HS_SITE"}) as reply:
                if reply.status == 200 and (await reply.json()).get("values"):
                    return
            await asyncio.sleep(0.2)
        raise admin_tasks.CommandError(f"the secondary of {prefix} did not home at the top-level")

    # -- data --------------------------------------------------------------------

    def _generate(self) -> list[tuple[Enterprise, str, list[dict[str, Any]]]]:
        """Records, raw materials first, so every trace link names an earlier record."""
        pool: dict[str, list[str]] = {}  # industry name -> identifiers made so far
        tier_of = {i.name: i.tier for i in INDUSTRIES}
        records = []
        start = datetime.date(2025, 1, 1)
        for tier in (0, 1, 2):
            for enterprise in self.enterprises:
                industry = enterprise.industry
                if industry.tier != tier:
                    continue
                for n in range(1, self.args.ids_per_enterprise + 1):
                    code, product = self.rng.choice(industry.items)
                    made = start + datetime.timedelta(days=self.rng.randrange(300))
                    batch = f"B{made:%Y%m%d}-{self.rng.randrange(10000):04d}"
                    suffix = f"{code}-{made:%Y}-{n:06d}"
                    handle = f"{enterprise.prefix}/{suffix}"
                    values: list[dict[str, Any]] = [
                        _value(1, "URL", f"https://{enterprise.domain}/id/{suffix}"),
                        _value(2, "product", product),
                        _value(3, "batch", batch),
                        _value(4, "manufacturer", enterprise.name),
                        _value(5, "production_date", made.isoformat()),
                        _value(6, "kind", industry.kind),
                        _value(7, "industry", industry.name),
                    ]
                    candidates = [(h, tier_of[src]) for src in industry.sources
                                  for h in pool.get(src, ())]
                    if candidates:
                        k = min(len(candidates), self.rng.randint(1, 3))
                        for i, (source, source_tier) in enumerate(self.rng.sample(candidates, k)):
                            values.append(_value(20 + i, TRACE_RELATION[source_tier], source))
                    records.append((enterprise, handle, values))
                    pool.setdefault(industry.name, []).append(handle)
        return records

    async def _register(self, session: aiohttp.ClientSession, nodes: dict[str, NodeProcess],
                        records: Sequence[tuple[Enterprise, str, list[dict[str, Any]]]]) -> int:
        by_enterprise: dict[str, list[dict[str, Any]]] = {}
        owners = {}
        for enterprise, handle, values in records:
            by_enterprise.setdefault(enterprise.prefix, []).append(
                {"handle": handle, "values": values})
            owners[enterprise.prefix] = enterprise
        count = 0
        for prefix, items in by_enterprise.items():
            enterprise = owners[prefix]
            node = nodes[enterprise.industry.prefix]
            auth = aiohttp.encode_basic_auth(enterprise.admin.replace(":", "%3A", 1),
                                             enterprise.secret)
            for i in range(0, len(items), BATCH):
                async with session.post(f"{node.url}/api/handles", json=items[i:i + BATCH],
                                        headers={"Authorization": auth}) as reply:
                    body = await reply.json()
                if reply.status != 200:
                    raise admin_tasks.CommandError(f"registering at {node.name}: {body}")
                failed = [r for r in body["results"] if r["responseCode"] != 1]
                if failed:
                    raise admin_tasks.CommandError(f"registering at {node.name}: {failed[:3]}")
                count += len(items[i:i + BATCH])
        return count

    @staticmethod
    def _example_chain(records: Sequence[tuple[Enterprise, str, list[dict[str, Any]]]]
                       ) -> list[str]:
        """The longest trace chain in the data (product <- part <- raw material)."""
        links = {handle: [v["data"]["value"] for v in values if v["type"].startswith("TRACE.")]
                 for _, handle, values in records}
        longest: dict[str, list[str]] = {}
        for _, handle, _ in records:  # sources come before the records made from them
            tails = [longest[source] for source in links[handle]]
            longest[handle] = [handle, *max(tails, key=len, default=[])]
        return max(longest.values(), key=len)

    # -- output and checks ----------------------------------------------------------

    def _print(self, top: NodeProcess, secondaries: Sequence[tuple[Industry, NodeProcess]],
               recursive: NodeProcess, count: int, took: float, example: list[str]) -> None:
        out = [f"idnode simulation (seed {self.args.seed}) in {self.workdir}", "", "Topology:"]
        out.append(f"  top-level   {top.url}  handle 127.0.0.1:{top.handle_port}")
        for industry, node in secondaries:
            enterprises = [e.prefix for e in self.enterprises if e.industry is industry]
            out.append(f"  secondary   {node.url}  handle 127.0.0.1:{node.handle_port}  "
                       f"{industry.name} {industry.prefix} -> {', '.join(enterprises)}")
        out.append(f"  recursive   {recursive.url}  handle 127.0.0.1:{recursive.handle_port}  "
                   f"(asks the top-level)")
        out += ["", "Credentials (HTTP Basic, user index:handle):"]
        for industry, _ in secondaries:
            out.append(f"  top-level   300:0.NA/{industry.prefix}  "
                       f"{self.delegation_secrets[industry.prefix]}  (homing, statistics)")
            out.append(f"  {industry.name:<11} 300:{industry.prefix}/ADMIN  "
                       f"{self.industry_secrets[industry.prefix]}")
        for e in self.enterprises:
            out.append(f"  {e.prefix:<11} {e.admin}  {e.secret}  {e.name}")
        out += ["", f"Registered {count} identifiers in {took:.1f} s. A trace "
                    f"({' <- '.join(example)}):"]
        out.append(f"  curl {recursive.url}/api/handles/{example[0]}")
        out.append(f"  idnode trace {example[0]} --server {recursive.url}")
        out.append(f"Usage statistics (every {self.args.stats_interval:g} s): "
                   f"curl {top.url}/api/stats")
        out.append(f"Logs: {self.workdir}/*.log.")
        if not self.args.once:
            out.append("Ready; Ctrl-C stops every node.")
        print("\n".join(out), flush=True)

    async def _check(self, session: aiohttp.ClientSession, recursive: NodeProcess,
                     chain: list[str]) -> int:
        """Follow the example chain through the recursive node; 0 if every link resolves."""
        for handle, source in zip(chain, [*chain[1:], None], strict=True):
            async with session.get(f"{recursive.url}/api/handles/{handle}") as reply:
                body = await reply.json()
            links = [v["data"]["value"] for v in body.get("values", [])
                     if v["type"].startswith("TRACE.")]
            if reply.status != 200 or (source is not None and source not in links):
                print(f"Check failed at {handle}: {reply.status} {body}", flush=True)
                return 1
        print(f"Check passed: {len(chain)} identifiers traced through the recursive node.",
              flush=True)
        return 0

    async def _wait_for_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("Stopping...", flush=True)

    def stop_all(self) -> None:
        """SIGTERM every node (recursive first, top-level last), SIGKILL stragglers."""
        for node in reversed(self.nodes):
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for node in reversed(self.nodes):
            if node.proc is None:
                continue
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()


def _value(index: int, type_: str, text: str) -> dict[str, Any]:
    return {"index": index, "type": type_, "data": {"format": "string", "value": text}}


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

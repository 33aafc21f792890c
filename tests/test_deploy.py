"""deploy/ cannot be started here (no container engine, no cluster): check what can be.

Every file parses; every idnode command line in it is one the CLI accepts;
ports, probe paths and scrape targets agree with those command lines; and
every metric the Grafana dashboard queries is one a live node exports.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from resolver.cli import build_parser
from tests.live import PREFIX, LiveNode, live_node  # noqa: F401  (fixture)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"


def _yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _parses(args: list[str]) -> Any:
    """The CLI's parse of ``args``; argparse exits (SystemExit) on anything unknown."""
    return build_parser().parse_args(args)


@pytest.mark.parametrize(
    "path", sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml")),
    ids=lambda p: str(p.relative_to(DEPLOY)),
)
def test_every_yaml_file_parses(path: Path) -> None:
    assert _yaml_documents(path)


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _idnode_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service for name, service in compose["services"].items()
        if service.get("image", "").startswith("idnode") and name != "idnode-init"
    }


def test_compose_node_commands_are_valid_cli_and_match_published_ports() -> None:
    compose = _compose()
    nodes = _idnode_services(compose)
    assert len(nodes) == 3
    for name, service in nodes.items():
        args = service["command"]
        parsed = _parses(args)
        assert parsed.command == "serve"
        assert parsed.store.startswith("postgresql://"), name
        container_ports = {p.split(":")[-1] for p in service["ports"]}
        assert container_ports == {
            f"{parsed.port}", f"{parsed.handle_port}/tcp", f"{parsed.handle_port}/udp"
        }, name
        healthcheck = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{parsed.port}/readyz" in healthcheck


def test_compose_init_command_is_valid_cli_and_uses_the_nodes_store_and_key() -> None:
    compose = _compose()
    init_args = shlex.split(compose["services"]["idnode-init"]["command"][0].split("&&")[0])
    assert init_args[0] == "idnode"
    parsed_init = _parses(init_args[1:])
    for service in _idnode_services(compose).values():
        parsed = _parses(service["command"])
        assert parsed.store == parsed_init.store
        assert parsed.master_key == parsed_init.master_key


def test_prometheus_scrapes_every_compose_node_on_its_http_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    expected = {f"{name}:{_parses(s['command']).port}"
                for name, s in _idnode_services(_compose()).items()}
    assert targets == expected


def _k8s_args() -> list[str]:
    """The Deployment's args with ``$(VAR)`` expanded from the ConfigMap, as Kubernetes does."""
    (config_map,) = _yaml_documents(K8S / "configmap.yaml")
    (deployment,) = _yaml_documents(K8S / "deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = config_map["data"]
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]


def test_k8s_deployment_args_are_valid_cli_and_match_ports_and_probes() -> None:
    args = _k8s_args()
    parsed = _parses(args)
    assert parsed.command == "serve"
    (deployment,) = _yaml_documents(K8S / "deployment.yaml")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert ports == {
        "http": (parsed.port, "TCP"),
        "handle-tcp": (parsed.handle_port, "TCP"),
        "handle-udp": (parsed.handle_port, "UDP"),
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(parsed.port)
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(parsed.master_key).parent) in mounted

    (service,) = _yaml_documents(K8S / "service.yaml")
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports
        assert ports[port["targetPort"]] == (port["port"], port["protocol"])
    (hpa,) = _yaml_documents(K8S / "hpa.yaml")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_systemd_unit_runs_a_valid_serve_command() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(DEPLOY / "systemd" / "idnode.service")
    exec_start = shlex.split(unit["Service"]["ExecStart"])
    assert exec_start[0].endswith("/idnode")
    parsed = _parses(exec_start[1:])
    assert parsed.command == "serve"
    assert parsed.store.startswith(unit["Service"]["ReadWritePaths"])
    assert unit["Service"]["KillSignal"] == "SIGTERM"


def test_dockerfile_copies_existing_paths_and_exposes_the_default_ports() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    root = DEPLOY.parent
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (root / source).exists(), source
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    parsed = _parses(cmd)
    exposed = set(re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split())  # type: ignore[union-attr]
    assert exposed == {f"{parsed.port}/tcp", f"{parsed.handle_port}/tcp",
                       f"{parsed.handle_port}/udp"}


def _dashboard_metric_names() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "idnode.json").read_text())
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names.update(re.findall(r"\b(idnode_[a-z_]+)\b", target["expr"]))
    return names


def test_grafana_provisioning_points_at_the_dashboard_folder_and_prometheus() -> None:
    compose = _compose()
    (provider,) = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "idnode.yaml").read_text()
    )["providers"]
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["grafana"]["volumes"])
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    (datasource,) = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"]
    assert datasource["url"].endswith(":9090")
    assert "prometheus" in compose["services"]


async def test_every_dashboard_metric_is_exported_by_a_live_node(
    live_node: LiveNode,  # noqa: F811
) -> None:
    # A hit and a miss, so every labelled family has at least one series.
    handle = live_node.handle_url(f"{PREFIX}/DEPLOY-CHECK")
    for _ in range(2):
        async with live_node.session.get(handle) as response:
            assert response.status == 404
    async with live_node.session.get(f"{live_node.url}/metrics") as response:
        exported = await response.text()
    series = set(re.findall(r"^(idnode_[a-z_]+)", exported, re.M))
    missing = _dashboard_metric_names() - series
    assert not missing, f"dashboard queries metrics no node exports: {sorted(missing)}"
    for path in ("/healthz", "/readyz"):
        async with live_node.session.get(live_node.url + path) as response:
            assert response.status == 200

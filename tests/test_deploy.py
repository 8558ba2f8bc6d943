"""The Kubernetes manifests: each overlay rendered by the real kustomize (``kubectl kustomize``) and every object
validated against the Kubernetes 1.37 schemas (kubernetes-validate, strict), then checked for what the gateway
itself relies on: probe paths it serves, settings it knows, the admin API kept internal, Redis durable."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.app import create_app
from server.settings import Settings
from tests.env_settings import settings_from_env, unknown_setting

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = ROOT / ".cache" / "tools" / "kubectl"
OVERLAYS = ["cpu", "gpu", "remote"]
K8S_VERSION = "1.37.0"

Obj = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    if not KUBECTL.exists():
        pytest.skip("kubectl is not installed (scripts/tools.sh fetches it; needs npm)")
    out = subprocess.run([str(KUBECTL), "kustomize", str(ROOT / "deploy" / "overlays" / request.param)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return request.param, [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_every_object_validates_against_the_schemas(rendered: tuple[str, list[Obj]]) -> None:
    _, objs = rendered
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "StatefulSet", "PersistentVolumeClaim", "Secret",
            "ConfigMap", "NetworkPolicy"} <= kinds
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        assert obj["metadata"].get("namespace", "unlearning-gateway") == "unlearning-gateway"


def test_the_validator_rejects_a_broken_object(rendered: tuple[str, list[Obj]]) -> None:
    _, objs = rendered
    broken = yaml.safe_load(yaml.safe_dump(one(objs, "Deployment", "ugw-gateway")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"not": "a port"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_gateway_pods_run_the_settings_and_probes_the_server_knows(rendered: tuple[str, list[Obj]]) -> None:
    overlay, objs = rendered
    config = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("ugw-settings"))
    for name in config["data"]:
        assert unknown_setting(name) is None, unknown_setting(name)
    settings = settings_from_env({**config["data"], "UGW_ADMIN_TOKEN": "x" * 32})
    assert settings.registry.backend == "redis" and settings.jobs.mode == "queue"
    assert settings.registry.on_unavailable == "closed" and settings.admin_port is not None
    served = {getattr(r, "path", None) for r in create_app(Settings()).routes}

    for name, role in (("ugw-gateway", "serve"), ("ugw-worker", "worker")):
        pod = one(objs, "Deployment", name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == [role]
        assert container["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"]
        token = next(e for e in container["env"] if e["name"] == "UGW_ADMIN_TOKEN")
        secret = one(objs, "Secret", token["valueFrom"]["secretKeyRef"]["name"])
        assert token["valueFrom"]["secretKeyRef"]["key"] in secret["stringData"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == settings.port
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["path"] in served
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
        assert claims[mounts[str(settings.registry.artifact_dir)]] == "ugw-artifacts"
        if overlay == "gpu":
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
            assert str(settings.engine.model).startswith("/models/") and "/models" in mounts

    gateway = one(objs, "Deployment", "ugw-gateway")["spec"]["template"]["spec"]
    (container,) = gateway["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["admin"] == settings.admin_port
    # graceful shutdown: the pod outlives the preStop pause plus the server's drain of in-flight streams
    assert "preStop" in container["lifecycle"]
    assert gateway["terminationGracePeriodSeconds"] > settings.drain_timeout_s + 5
    assert one(objs, "PersistentVolumeClaim", "ugw-artifacts")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_admin_api_stays_internal(rendered: tuple[str, list[Obj]]) -> None:
    _, objs = rendered
    config = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("ugw-settings"))
    admin_port = int(config["data"]["UGW_ADMIN_PORT"])
    public = one(objs, "Service", "ugw-gateway")
    assert public["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["http"]
    policy = one(objs, "NetworkPolicy", "ugw-gateway")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "ugw-gateway"}
    for rule in policy["spec"]["ingress"]:
        ports = [p["port"] for p in rule["ports"]]
        if admin_port in ports:  # the admin port only from labelled pods, never from everywhere
            assert rule.get("from"), "the admin port is open to every source"
            assert all("podSelector" in src and "namespaceSelector" not in src for src in rule["from"])


def test_redis_keeps_every_write(rendered: tuple[str, list[Obj]]) -> None:
    _, objs = rendered
    redis = one(objs, "StatefulSet", "ugw-redis")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and args[args.index("--appendfsync") + 1] == "always"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    service = one(objs, "Service", "ugw-redis")
    config = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("ugw-settings"))
    assert config["data"]["UGW_REGISTRY__REDIS_URL"] == f"redis://{service['metadata']['name']}:6379/0"
    hpa = one(objs, "HorizontalPodAutoscaler", "ugw-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "ugw-gateway" and hpa["spec"]["minReplicas"] >= 2


def test_remote_overlay_engines_run_what_the_remote_engine_needs(rendered: tuple[str, list[Obj]]) -> None:
    overlay, objs = rendered
    if overlay != "remote":
        pytest.skip("the remote overlay only")
    config = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("ugw-settings"))
    settings = settings_from_env({**config["data"], "UGW_ADMIN_TOKEN": "x" * 32})
    assert settings.engine.kind == "remote"
    service = one(objs, "Service", "ugw-vllm")
    assert settings.engine.upstreams == [f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"]
    pod = one(objs, "Deployment", "ugw-vllm")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    for flag in ("--enable-prompt-embeds", "--enable-lora", "--logprobs-mode=processed_logprobs"):
        assert flag in args
    # the image's package entry point loads the processor; the flag too would run it twice
    assert not any(a.startswith("--logits-processors") for a in args)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    # adapter copies and net tables are written on the artifacts volume and read at the same path upstream
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert claims[mounts[str(settings.registry.artifact_dir)]] == "ugw-artifacts"
    assert settings.engine.adapter_dir is not None
    assert str(settings.engine.adapter_dir).startswith(str(settings.registry.artifact_dir) + "/")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    values = yaml.safe_load((ROOT / "deploy" / "overlays" / "remote" / "production-stack-values.yaml").read_text())
    (spec,) = values["servingEngineSpec"]["modelSpec"]
    assert set(spec["vllmConfig"]["extraArgs"]) >= {"--enable-prompt-embeds", "--logprobs-mode=processed_logprobs"}
    assert not any(a.startswith("--logits-processors") for a in spec["vllmConfig"]["extraArgs"])
    assert spec["enableLoRA"] is True

"""KUBERNETES_POD manifests, for every isolation level and config, against the official
client's models and the rules of the Kubernetes API it carries.

No cluster is reachable here: each manifest is serialized as the client sends it
(``sanitize_for_serialization``), checked against the OpenAPI types of every model
(``openapi_types``/``attribute_map``: no unknown field, each value of its type),
deserialized back into ``V1Pod``/``V1Deployment`` as the client reads answers, and
checked against the API server's validation rules that matter here (names, label
values, quantities, restart policies, securityContext, probes, selectors).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.utils import parse_quantity as _parse_quantity

from codex32 import IsolationType
from codex32.executor import Bot, DeploymentConfig, HealthCheck
from codex32.executor.backends.kubernetes import manifests


def parse_quantity(text: str) -> Any:
    """The client's parser of resource quantities (``500m``, ``128Mi``): it raises on what
    the API server refuses."""
    return _parse_quantity(text)  # type: ignore[no-untyped-call]


SAMPLE = str(Path(__file__).resolve().parents[2] / "bots" / "sample_bot.py")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")

PROBES: list[dict[str, Any] | None] = [
    None,
    {"type": "exec", "command": ["python3", "-c", "print('ok')"]},
    {"type": "http", "port": 8080, "path": "/health"},
    {"type": "tcp", "port": 9000},
]


def _conforms(value: Any, type_name: str, where: str) -> None:
    """``value`` (JSON) is of the OpenAPI type ``type_name`` (the client's notation)."""
    if value is None:
        return
    if type_name.lower().startswith("list["):
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            _conforms(item, type_name[5:-1], f"{where}[{i}]")
    elif type_name.lower().startswith(("dict(", "dict[")):
        inner = type_name[5:-1].split(", ", 1)[1]
        assert isinstance(value, dict), where
        for key, item in value.items():
            _conforms(item, inner, f"{where}.{key}")
    elif type_name in ("str", "int", "bool", "float", "object", "datetime", "bytes"):
        kinds: dict[str, Any] = {
            "str": str,
            "int": int,
            "bool": bool,
            "float": (int, float),
            "object": (str, int, dict, list),
            "datetime": str,
            "bytes": str,
        }
        assert isinstance(value, kinds[type_name]), f"{where}: {value!r} is not {type_name}"
    else:
        model = getattr(k8s, type_name)
        assert isinstance(value, dict), where
        json_names = {v: k for k, v in model.attribute_map.items()}
        for key, item in value.items():
            assert key in json_names, f"{where}: {key} is no field of {type_name}"
            _conforms(item, model.openapi_types[json_names[key]], f"{where}.{key}")


def _bots() -> list[tuple[str, Bot]]:
    cases = []
    for level in IsolationType:
        for index, probe in enumerate(PROBES):
            for replicas in (1, 3):
                for policy in ("no", "on-failure:3", "always"):
                    check = (
                        HealthCheck(
                            probe=probe,
                            interval=2.5,
                            timeout=1,
                            retries=4,
                            start_period=7,
                            restart_on_unhealthy=index != 2,
                        )
                        if probe
                        else None
                    )
                    config = DeploymentConfig(
                        deployment_type="kubernetes_pod",
                        isolation=level,
                        replicas=replicas,
                        restart_policy=policy,
                        health_check=check,
                        namespace="bots",
                        resources={"cpus": 0.5, "memory_bytes": 128 << 20} if index % 2 else {},
                    )
                    bot = Bot(
                        name=f"bot-{level.value}",
                        code=SAMPLE,
                        args=["--beats", "3"],
                        env={"MODE": "test"},
                        labels={"team": "ops"},
                        deployment_config=config,
                    )
                    cases.append((f"{level.value}-{index}-{replicas}-{policy}", bot))
    return cases


CASES = _bots()


@pytest.mark.parametrize(("case", "bot"), CASES, ids=[c for c, _ in CASES])
def test_manifests_follow_the_kubernetes_api(case: str, bot: Bot) -> None:
    built = manifests(bot, secrets={"TOKEN": "s3cret"})
    api = k8s.ApiClient()
    for obj in built.objects():
        body = api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        _conforms(body, type(obj).__name__, body["kind"])
        back = api.deserialize(json.dumps(body), type(obj).__name__, "application/json")
        assert back == obj, f"{body['kind']} changed on the way back"
        name = body["metadata"]["name"]
        assert DNS_SUBDOMAIN.match(name) and len(name) <= 253, name
        for key, value in body["metadata"]["labels"].items():
            assert LABEL_VALUE.match(value), (key, value)

    workload: dict[str, Any] = api.sanitize_for_serialization(  # type: ignore[no-untyped-call]
        built.pod or built.deployment
    )
    if bot.deployment_config.replicas > 1:
        assert built.pod is None and workload["kind"] == "Deployment"
        spec = workload["spec"]
        template_labels = spec["template"]["metadata"]["labels"]
        assert all(template_labels[k] == v for k, v in spec["selector"]["matchLabels"].items())
        pod_spec = spec["template"]["spec"]
        assert pod_spec["restartPolicy"] == "Always"  # the only one a Deployment allows
        assert spec["replicas"] == 3
    else:
        assert built.deployment is None and workload["kind"] == "Pod"
        pod_spec = workload["spec"]
        expected = {"no": "Never", "on-failure": "OnFailure", "always": "Always"}
        assert pod_spec["restartPolicy"] == expected[bot.deployment_config.restart_policy.name]
    container = pod_spec["containers"][0]
    assert DNS_LABEL.match(container["name"])
    assert container["command"] == ["python3", "/bot/sample_bot.py", "--beats", "3"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/bot"]["readOnly"] and "/state" in mounts
    volumes = {v["name"] for v in pod_spec["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes
    env = {e["name"]: e for e in container["env"]}
    assert env["MODE"]["value"] == "test"
    assert env["TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "bot-" + bot.name + "-secrets",
        "key": "TOKEN",
    }
    assert built.secret is not None and built.secret.string_data == {"TOKEN": "s3cret"}
    assert "sample_bot.py" in (built.config_map.data or {})

    if "resources" in container:
        for quantities in (container["resources"]["limits"], container["resources"]["requests"]):
            for value in quantities.values():
                parse_quantity(value)  # raises on what the API server would refuse
        limits = container["resources"]["limits"]
        assert parse_quantity(limits["cpu"]) == parse_quantity("500m")
        assert parse_quantity(limits["memory"]) == 128 << 20

    check = bot.deployment_config.health_check
    probe = container.get("livenessProbe") or container.get("readinessProbe")
    if check is None:
        assert probe is None
    else:
        assert ("livenessProbe" in container) == check.restart_on_unhealthy
        assert (probe["periodSeconds"], probe["timeoutSeconds"]) == (3, 1)
        assert (probe["failureThreshold"], probe["initialDelaySeconds"]) == (4, 7)
        assert len({"exec", "httpGet", "tcpSocket"} & set(probe)) == 1

    _security_matches(bot.deployment_config.isolation, container["securityContext"], pod_spec)


def _security_matches(
    level: IsolationType, context: dict[str, Any], pod_spec: dict[str, Any]
) -> None:
    assert context["allowPrivilegeEscalation"] is False
    assert pod_spec["automountServiceAccountToken"] is False
    if level is IsolationType.MINIMAL:
        assert "capabilities" not in context and "readOnlyRootFilesystem" not in context
        return
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "ALL" in context["capabilities"]["drop"]
    if level is IsolationType.STANDARD:
        assert "runAsNonRoot" not in context and "readOnlyRootFilesystem" not in context
        return
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 1000
    assert context["readOnlyRootFilesystem"] is True
    assert "add" not in context["capabilities"] and context["privileged"] is False
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in pod_spec["containers"][0]["volumeMounts"]}
    assert "/tmp" in mounts  # a read-only root keeps a writable /tmp


def test_the_clients_models_refuse_what_the_api_requires() -> None:
    """The OpenAPI rules the client enforces itself: required fields."""
    with pytest.raises(ValueError, match="name"):
        k8s.V1Container(name=None, image="python:3.11-slim")
    with pytest.raises(ValueError, match="type"):
        k8s.V1SeccompProfile(type=None)


def test_without_a_cluster_the_live_path_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import asyncio

    from codex32 import ContainerError
    from codex32.executor import BotRun, DeploymentType
    from codex32.executor.backends.kubernetes import KubernetesBackend

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    bot = Bot(
        name="pod",
        code=SAMPLE,
        deployment_config=DeploymentConfig(deployment_type="kubernetes_pod"),
    )
    run = BotRun(bot_id=bot.id, number=1, deployment_type=DeploymentType.KUBERNETES_POD)
    with pytest.raises(ContainerError, match="KUBECONFIG"):
        asyncio.run(KubernetesBackend().start(bot, run))

"""KUBERNETES_POD: the same bot definition, scheduled by a Kubernetes cluster.

``manifests(bot)`` builds the objects with the official client's models: a
ConfigMap with the bot's code (mounted read-only at ``/bot``), a Secret with its
resolved secrets, and a Pod, or a Deployment when ``replicas > 1``. Resources become
requests and limits, the isolation level a securityContext (STRICT: runAsNonRoot,
readOnlyRootFilesystem, drop ALL, seccomp RuntimeDefault), the health check a
liveness (or readiness) probe that the kubelet runs.

The live path talks to the cluster ``KUBECONFIG`` names (or the in-cluster account);
docs/executor.md says how to point it at kind, k3s or a real cluster.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from codex32 import ContainerError, IsolationType
from codex32.executor.backends import Observed, ProbeResult, Started, resolve_secrets
from codex32.executor.models import Bot, BotRun, DeploymentType, ExecProbe, HealthCheck, HttpProbe

CODE_DIR = "/bot"
STATE_DIR = "/state"
BOT_UID = 1000
#: A ConfigMap holds at most 1 MiB; a bigger bot belongs in an image.
CODE_LIMIT = 1024 * 1024
_POD_RESTART = {
    "no": "Never",
    "on-failure": "OnFailure",
    "always": "Always",
    "unless-stopped": "Always",
}


@dataclass
class Manifests:
    """What one bot is made of in a cluster."""

    config_map: k8s.V1ConfigMap
    secret: k8s.V1Secret | None
    pod: k8s.V1Pod | None
    deployment: k8s.V1Deployment | None

    def objects(self) -> list[Any]:
        return [o for o in (self.config_map, self.secret, self.pod, self.deployment) if o]


def object_name(bot: Bot) -> str:
    return f"bot-{bot.name}"


def labels(bot: Bot) -> dict[str, str]:
    return {
        **bot.labels,
        "app.kubernetes.io/name": bot.name,
        "app.kubernetes.io/managed-by": "codex32",
        "codex32.io/bot-id": bot.id,
    }


def security_context(isolation: IsolationType) -> k8s.V1SecurityContext:
    """The container's securityContext for an isolation level (as docs/isolation.md)."""
    if isolation is IsolationType.MINIMAL:
        return k8s.V1SecurityContext(allow_privilege_escalation=False)
    runtime_default = k8s.V1SeccompProfile(type="RuntimeDefault")
    if isolation is IsolationType.STANDARD:
        return k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(
                drop=["ALL"], add=["CHOWN", "SETUID", "SETGID", "NET_BIND_SERVICE", "KILL"]
            ),
            seccomp_profile=runtime_default,
        )
    return k8s.V1SecurityContext(
        run_as_non_root=True,
        run_as_user=BOT_UID,
        run_as_group=BOT_UID,
        read_only_root_filesystem=True,
        allow_privilege_escalation=False,
        privileged=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=runtime_default,
    )


def resources(bot: Bot) -> k8s.V1ResourceRequirements | None:
    limits = bot.deployment_config.resources
    quantities: dict[str, str] = {}
    if limits.cpus:
        quantities["cpu"] = f"{round(limits.cpus * 1000)}m"
    if limits.memory_bytes:
        quantities["memory"] = str(limits.memory_bytes)
    if not quantities:
        return None
    requests = dict(quantities)
    if limits.memory_reservation_bytes:
        requests["memory"] = str(limits.memory_reservation_bytes)
    return k8s.V1ResourceRequirements(limits=quantities, requests=requests)


def probe(check: HealthCheck) -> k8s.V1Probe:
    """Docker's HEALTHCHECK timings as a Kubernetes probe (whole seconds, at least 1)."""
    action = check.probe
    fields: dict[str, Any] = {
        "period_seconds": max(1, math.ceil(check.interval)),
        "timeout_seconds": max(1, math.ceil(check.timeout)),
        "failure_threshold": check.retries,
        "initial_delay_seconds": math.ceil(check.start_period),
    }
    if isinstance(action, ExecProbe):
        fields["_exec"] = k8s.V1ExecAction(command=list(action.command))
    elif isinstance(action, HttpProbe):
        fields["http_get"] = k8s.V1HTTPGetAction(
            path=action.path, port=action.port, host=action.host
        )
    else:
        fields["tcp_socket"] = k8s.V1TCPSocketAction(port=action.port, host=action.host)
    return k8s.V1Probe(**fields)


def _code_files(bot: Bot) -> dict[str, str]:
    from codex32 import ConfigError

    path = Path(bot.code)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    data = {
        f.name: f.read_text()
        for f in files
        if f.suffix in (".py", ".txt", ".json", ".toml", ".yaml", ".cfg")
    }
    if sum(len(v) for v in data.values()) > CODE_LIMIT:
        raise ConfigError(
            f"bot {bot.name}: its code is over 1 MiB, more than a ConfigMap holds",
            hint="build an image with it and set kubernetes_image",
        )
    return data


def manifests(
    bot: Bot, *, code: dict[str, str] | None = None, secrets: dict[str, str] | None = None
) -> Manifests:
    """The ConfigMap, Secret and Pod (or Deployment) of ``bot``."""
    config = bot.deployment_config
    name = object_name(bot)
    meta = k8s.V1ObjectMeta(name=name, namespace=config.namespace, labels=labels(bot))
    code = _code_files(bot) if code is None else code
    secrets = resolve_secrets(bot) if secrets is None else secrets
    config_map = k8s.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        data=code,
        metadata=k8s.V1ObjectMeta(
            name=f"{name}-code", namespace=config.namespace, labels=labels(bot)
        ),
    )
    secret = None
    if secrets:
        secret = k8s.V1Secret(
            api_version="v1",
            kind="Secret",
            type="Opaque",
            string_data=secrets,
            metadata=k8s.V1ObjectMeta(
                name=f"{name}-secrets", namespace=config.namespace, labels=labels(bot)
            ),
        )
    env = [k8s.V1EnvVar(name=k, value=v) for k, v in sorted(bot.env.items())]
    env += [
        k8s.V1EnvVar(name="BOT_ID", value=bot.id),
        k8s.V1EnvVar(name="BOT_NAME", value=bot.name),
        k8s.V1EnvVar(name="BOT_STATE_DIR", value=STATE_DIR),
        k8s.V1EnvVar(name="PYTHONUNBUFFERED", value="1"),
    ]
    env += [
        k8s.V1EnvVar(
            name=key,
            value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(name=f"{name}-secrets", key=key)
            ),
        )
        for key in sorted(secrets)
    ]
    mounts = [
        k8s.V1VolumeMount(name="code", mount_path=CODE_DIR, read_only=True),
        k8s.V1VolumeMount(name="state", mount_path=STATE_DIR),
    ]
    volumes = [
        k8s.V1Volume(name="code", config_map=k8s.V1ConfigMapVolumeSource(name=f"{name}-code")),
        k8s.V1Volume(name="state", empty_dir=k8s.V1EmptyDirVolumeSource()),
    ]
    if config.isolation is IsolationType.STRICT:  # a read-only root keeps /tmp writable
        mounts.append(k8s.V1VolumeMount(name="tmp", mount_path="/tmp"))
        volumes.append(k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()))
    check = config.health_check
    container = k8s.V1Container(
        name="bot",
        image=config.kubernetes_image,
        command=["python3", f"{CODE_DIR}/{bot.script_name}", *bot.args],
        working_dir=CODE_DIR,
        env=env,
        resources=resources(bot),
        security_context=security_context(config.isolation),
        volume_mounts=mounts,
        liveness_probe=probe(check) if check and check.restart_on_unhealthy else None,
        readiness_probe=probe(check) if check and not check.restart_on_unhealthy else None,
    )
    pod_security = None
    if config.isolation is not IsolationType.MINIMAL:
        pod_security = k8s.V1PodSecurityContext(
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
            run_as_non_root=True if config.isolation is IsolationType.STRICT else None,
            fs_group=BOT_UID if config.isolation is IsolationType.STRICT else None,
        )
    replicated = config.replicas > 1
    spec = k8s.V1PodSpec(
        containers=[container],
        volumes=volumes,
        restart_policy="Always" if replicated else _POD_RESTART[config.restart_policy.name],
        security_context=pod_security,
        automount_service_account_token=False,
        termination_grace_period_seconds=config.stop_timeout,
        enable_service_links=False,
    )
    if not replicated:
        return Manifests(
            config_map,
            secret,
            k8s.V1Pod(api_version="v1", kind="Pod", metadata=meta, spec=spec),
            None,
        )
    selector = {"app.kubernetes.io/name": bot.name, "codex32.io/bot-id": bot.id}
    deployment = k8s.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=meta,
        spec=k8s.V1DeploymentSpec(
            replicas=config.replicas,
            selector=k8s.V1LabelSelector(match_labels=selector),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels(bot)), spec=spec
            ),
        ),
    )
    return Manifests(config_map, secret, None, deployment)


class KubernetesBackend:
    """Bots as pods of the cluster that ``KUBECONFIG`` names (loaded on first use)."""

    deployment_type = DeploymentType.KUBERNETES_POD

    def __init__(self) -> None:
        self._api: k8s.ApiClient | None = None

    def api(self) -> k8s.ApiClient:
        if self._api is None:
            from kubernetes import config

            try:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            except Exception:
                try:
                    config.load_incluster_config()  # type: ignore[no-untyped-call]
                except Exception:
                    raise ContainerError(
                        "no Kubernetes cluster is configured",
                        hint="set KUBECONFIG to a kubeconfig file (kind, k3s, a cluster): "
                        "see docs/executor.md",
                    ) from None
            self._api = k8s.ApiClient()
        return self._api

    async def start(self, bot: Bot, run: BotRun) -> Started:
        built = manifests(bot)

        def create() -> Started:
            api = self.api()
            core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
            namespace = bot.deployment_config.namespace
            self._delete(bot, grace=0)
            core.create_namespaced_config_map(namespace, built.config_map)
            if built.secret:
                core.create_namespaced_secret(namespace, built.secret)
            if built.pod:
                core.create_namespaced_pod(namespace, built.pod)
            elif built.deployment:
                apps.create_namespaced_deployment(namespace, built.deployment)
            return Started(started_at=time.time(), pod_name=object_name(bot))

        return await asyncio.to_thread(create)

    def _delete(self, bot: Bot, grace: int) -> None:
        from kubernetes.client.exceptions import ApiException

        api = self.api()
        core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        namespace, name = bot.deployment_config.namespace, object_name(bot)
        calls: list[Callable[[], object]] = [
            lambda: apps.delete_namespaced_deployment(name, namespace, grace_period_seconds=grace),
            lambda: core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace),
            lambda: core.delete_namespaced_config_map(f"{name}-code", namespace),
            lambda: core.delete_namespaced_secret(f"{name}-secrets", namespace),
        ]
        for call in calls:
            try:
                call()
            except ApiException as error:
                if error.status != 404:
                    raise

    async def stop(self, bot: Bot, run: BotRun, timeout: float) -> None:
        await asyncio.to_thread(self._delete, bot, int(timeout))

    async def status(self, bot: Bot, run: BotRun) -> Observed:
        from kubernetes.client.exceptions import ApiException

        def look() -> Observed:
            core, apps = k8s.CoreV1Api(self.api()), k8s.AppsV1Api(self.api())
            namespace, name = bot.deployment_config.namespace, object_name(bot)
            try:
                if bot.deployment_config.replicas > 1:
                    apps.read_namespaced_deployment(name, namespace)
                    return Observed(running=True)
                pod = core.read_namespaced_pod(name, namespace)
            except ApiException as error:
                if error.status == 404:
                    return Observed(
                        running=False, lost=True, finished_at=time.time(), reason="the pod is gone"
                    )
                raise
            status = pod.status
            if status is None or status.phase in ("Pending", "Running", "Unknown"):
                return Observed(running=True)
            code = None
            for state in status.container_statuses or []:
                if state.state and state.state.terminated:
                    code = state.state.terminated.exit_code
            return Observed(running=False, exit_code=code, finished_at=time.time())

        return await asyncio.to_thread(look)

    async def logs(
        self,
        bot: Bot,
        run: BotRun | None,
        *,
        follow: bool,
        tail: int | None,
        live: Callable[[], bool],
    ) -> AsyncIterator[str]:
        core = k8s.CoreV1Api(self.api())
        namespace, name = bot.deployment_config.namespace, object_name(bot)
        text = await asyncio.to_thread(
            core.read_namespaced_pod_log, name, namespace, tail_lines=tail
        )
        for line in str(text).splitlines(keepends=True):
            yield line

    async def probe(self, bot: Bot, run: BotRun, check: HealthCheck) -> ProbeResult:
        """The kubelet probes pods; this reads what it found (the Ready condition)."""
        core = k8s.CoreV1Api(self.api())
        namespace, name = bot.deployment_config.namespace, object_name(bot)
        pod = await asyncio.to_thread(core.read_namespaced_pod, name, namespace)
        conditions = (pod.status.conditions if pod.status else None) or []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        return ProbeResult(ready, "Ready" if ready else "not Ready")

    async def remove(self, bot: Bot) -> None:
        await asyncio.to_thread(self._delete, bot, 0)

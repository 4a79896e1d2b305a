"""What a container takes from its image at create, as Docker does: the stop signal
(unless given), a host port per exposed port with ``-P``; and what its directory keeps
of the image (``image.json``)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from codex32._images.image import ImageConfig
from codex32.config.container import ContainerConfig


@dataclass(frozen=True)
class RootSource:
    """What a container's root is made of: the image's config and its lower layers
    (top first, as overlay's ``lowerdir``), relative to ``lower_base`` when set."""

    image_config: ImageConfig
    lower: tuple[str, ...]
    lower_base: str | None = None
    image_id: str | None = None
    reference: str = ""


def apply_image_defaults(config: ContainerConfig, image: ImageConfig) -> ContainerConfig:
    """What Docker takes from the image into the container's own config at create: its
    StopSignal (unless given), and a host port for each ExposedPort with ``-P``."""
    update: dict[str, Any] = {}
    if image.stop_signal and "stop_signal" not in config.model_fields_set:
        update["stop_signal"] = image.stop_signal
    if config.publish_all and image.exposed_ports:
        from codex32.config.network import PortMapping

        taken = {(p.container_port, p.protocol) for p in config.ports}
        ports = list(config.ports)
        for exposed in image.exposed_ports:
            number, _, protocol = exposed.partition("/")
            protocol = protocol or "tcp"
            if (
                not number.isdigit()
                or (int(number), protocol) in taken
                or protocol not in ("tcp", "udp")
            ):
                continue
            ports.append(
                PortMapping(
                    host_port=_free_port(protocol), container_port=int(number), protocol=protocol
                )
            )
        update["ports"] = ports
    if not update:
        return config
    return config.model_copy(update=update)


def _free_port(protocol: str) -> int:
    """An ephemeral port free now (Docker's -P picks from the same range)."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


def image_meta(source: RootSource) -> dict[str, Any]:
    """What the container's directory keeps of its image (``image.json``): the id for
    ``rmi``'s check, the healthcheck and labels for the executor and ``inspect``."""
    image = source.image_config
    return {
        "id": source.image_id,
        "reference": source.reference,
        "labels": image.labels,
        "healthcheck": image.healthcheck,
        "exposed_ports": list(image.exposed_ports),
        "stop_signal": image.stop_signal,
    }

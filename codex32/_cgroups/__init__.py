"""cgroup drivers (v1, v2, a fake), host detection, OOM watching, device rules,
and the containers' cgroups with their limit policy."""

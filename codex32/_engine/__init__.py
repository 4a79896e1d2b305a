"""ContainerEngine and Container: the wiring of the layers below."""

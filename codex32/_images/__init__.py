"""Root filesystems: rootfs templates today; OCI images next."""

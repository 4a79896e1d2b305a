"""Container networks: definitions and address leases (ipam), endpoints, hosts files,
the bridge cache, published ports and their proxy, and the engine's manager.

What they decide is made real through the kernel interfaces in ``codex32._linux``
(``netlink``, ``rtnl``, ``nftables``).
"""

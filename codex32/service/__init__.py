"""The host service: the native REST + WebSocket API and the Docker-compatible socket.

One asyncio process holds the warm engine; both sockets call the public API
(``codex32``) only.
"""

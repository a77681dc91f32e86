"""The core of the peer protocol, free of gRPC and Redis.

The session and task models with their state machines, the sequence rules (strict
and window), retry records, errors, caller identities, handshake limits, session
metadata parsing and the clock. Everything above (stores, the gRPC adapter, the
client) builds on these; nothing here imports from above, which ``make lint``
enforces with import-linter.
"""

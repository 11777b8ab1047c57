"""Bare servers measured beside middlewared; each runs as ``python -m bench.references.X
--port 0`` and prints the address it listens on."""

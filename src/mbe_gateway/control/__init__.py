"""The control plane: one loopback port with a token-guarded WebSocket protocol, /healthz and /metrics.

    protocol.py   frames, their validation, error codes
    auth.py       the admin and read-only tokens, scopes
    methods.py    the method table: name → scope, handler
    events.py     gateway events fanned out to clients
    metrics.py    counters, histograms, the Prometheus text format
    measured_mbe.py  the pipeline's MBE calls, timed
    status.py     the daemon at a glance (status, state events, gauges)
    server.py     the listener (aiohttp.web) and `serve`, started by the daemon
    client.py     a client for the CLI

Nothing is imported here: the CLI's client must not pay for the server's imports.
"""

"""Fakes of the platforms' servers (real HTTP/WebSocket on loopback), for tests and benchmarks."""

"""Chat platforms, each behind the one interface in base.py. Import a platform's module only
when it is enabled: each pulls in its platform's client library."""

from mbe_gateway.channels.base import Capabilities, Channel, Deliver, Inbound, Markup, Outbound

__all__ = ["Capabilities", "Channel", "Deliver", "Inbound", "Markup", "Outbound"]

"""Omnicast core: ports, services, the plugin host and the runtime that wires them."""

__version__ = "0.1.0"

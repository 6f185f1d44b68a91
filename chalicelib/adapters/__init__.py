"""Adapters: implementations of the ports in :mod:`chalicelib.ports`."""

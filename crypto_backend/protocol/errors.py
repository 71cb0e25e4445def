"""The errors of the protocol operations. Their messages never hold key bytes, EBIDs, MACs or ``id_A``."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A protocol input has the wrong type, length or value, or does not authenticate."""


class NoDayKeyError(ProtocolError):
    """No ``K_S`` for the day of an epoch."""

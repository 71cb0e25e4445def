"""KPI and Prometheus names of the federation, per partner country.

KPI counters (the ``kpis`` collection, :mod:`robert_server.kpis`) come as a total and one per partner,
``<name>_0x22``; Prometheus metrics carry the partner as a label. Contacts are counted (not HELLOs):
a contact is one EBID heard, the unit the partners exchange.
"""

from __future__ import annotations

from prometheus_client import Counter

FORWARDED = "federationContactsForwarded"  # sender: delivered to (accepted by) a partner
RECEIVED = "federationContactsReceived"  # receiver: accepted from a partner, stored for matching
REFUSED = "federationContactsRefused"  # receiver: refused on delivery or not for our country at matching
REFUSED_BY_PARTNER = "federationContactsRefusedByPartner"  # sender: a partner refused them
DROPPED = "federationContactsDropped"  # sender: no partner for that country (or undelivered) past retention


def label(country_code: int) -> str:
    return f"0x{country_code:02x}"


def per_partner(name: str, country_code: int, n: int) -> dict[str, int]:
    """The KPI increments of ``n`` contacts under ``name`` for one partner: the total and its own."""
    return {name: n, f"{name}_{label(country_code)}": n}


CONTACTS = Counter(
    "robert_federation_contacts_total",
    "Federation contacts by partner country and event (forwarded, received, refused, refused_by_partner,"
    " dropped)",
    ["partner", "event"],
)
DELIVERY_FAILURES = Counter(
    "robert_federation_delivery_failures_total",
    "Delivery calls to a partner that failed (unreachable, timeout, error): retried with back-off",
    ["partner"],
)
REFUSED_CALLS = Counter(
    "robert_federation_refused_calls_total",
    "Calls to our federation service refused before any batch was read (unknown certificate)",
)

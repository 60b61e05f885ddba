"""Destination connectors: deliver one stored message to one peer and say how it went.

Each connector turns every ordinary delivery problem into a :class:`DeliveryResult`
(SENT, RETRY or FAIL) so the engine's queue decides retries and dead letters in one place.
"""

from channels.destinations.base import DeliveryResult, Destination, Envelope, Verdict

__all__ = ["DeliveryResult", "Destination", "Envelope", "Verdict"]

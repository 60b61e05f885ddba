"""The message store: schema, status vocabulary and the synchronous store API."""

from engine.store.status import Status
from engine.store.store import Store, open_store

__all__ = ["Status", "Store", "open_store"]

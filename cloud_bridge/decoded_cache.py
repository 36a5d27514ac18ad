"""Decoded queue records shared inside the bridge process: a message is decoded once, not once per sink.

Why: at 1,000 frames/s ingest (validation), the archive sink and the Influx sink each decoded
every payload again. Decoding is a pure function of (kind, payload bytes), so a record that
ingest already validated can be reused by any sink that reads the same bytes from the queue;
the cache is keyed by them, so a hit can never return a record of other bytes. It is bounded
(oldest entries out first): a backlog larger than the cache (after a store outage) simply
decodes again. Records are immutable (frozen dataclasses, frozen pydantic models, a read-only
pixel array); users must not modify them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from cloud_bridge.channels import Decoded, decode_item


class DecodedCache:
    """Thread-safe bounded map (kind, payload) -> decoded record."""

    def __init__(self, max_items: int = 4096) -> None:
        if max_items < 1:
            raise ValueError("the decoded-record cache needs room for at least one record")
        self.max_items = max_items
        self._items: OrderedDict[tuple[str, bytes], Decoded] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def put(self, kind: str, payload: bytes, decoded: Decoded) -> None:
        """Remember a record decoded from `payload` (ingest calls this after validating)."""
        with self._lock:
            self._items[(str(kind), payload)] = decoded
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def decode(self, kind: str, payload: bytes) -> Decoded:
        """The cached record for these bytes, or `decode_item` (same errors) and cache it."""
        key = (str(kind), payload)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self.hits += 1
                return hit
            self.misses += 1
        decoded = decode_item(kind, payload)
        self.put(kind, payload, decoded)
        return decoded

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

"""Actor-side queue of items waiting to be delivered to the learner."""

from __future__ import annotations

import bisect
import collections
import itertools
import threading
from typing import Any

__all__ = ["QueuedDataStore"]

_OVERFLOW_POLICIES = ("drop_oldest", "drop_newest")


def _item_id(pair: tuple[int, Any]) -> int:
    return pair[0]


class QueuedDataStore:
    """Thread-safe bounded queue of ``(id, item)`` pairs awaiting acknowledgement.

    Same role and name as agentlace's ``QueuedDataStore`` (the actor keeps
    its transitions here; ``TrainerClient.update`` ships them). Each
    ``insert`` assigns the next integer id (0, 1, 2, ... per store). Items
    stay in the store until the server acknowledges them
    (``acknowledge(upto_id)`` removes every id <= ``upto_id``), so a lost
    reply or a learner restart never loses them.

    Overflow policy: at most ``capacity`` unacknowledged items are kept. With
    ``overflow="drop_oldest"`` (default) inserting into a full store removes
    the oldest pending item; with ``"drop_newest"`` the new item is discarded
    instead (its id is still consumed). Either way each discarded item adds 1
    to ``num_dropped`` and is never delivered (unless an ``update`` already
    had it in flight). Callers should log ``num_dropped``.

    Args:
      capacity: maximum number of pending items, positive int.
      overflow: "drop_oldest" or "drop_newest".

    Raises:
      ValueError: non-positive capacity or unknown overflow policy.
    """

    def __init__(self, capacity: int, overflow: str = "drop_oldest") -> None:
        if type(capacity) is not int or capacity <= 0:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if overflow not in _OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {_OVERFLOW_POLICIES}, got {overflow!r}")
        self.capacity = capacity
        self.overflow = overflow
        self._items: collections.deque[tuple[int, Any]] = collections.deque()
        self._next_id = 0
        self._num_dropped = 0
        self._lock = threading.Lock()

    def insert(self, item: dict) -> int:
        """Queues ``item`` (a dict, e.g. a transition) and returns its id (int >= 0).

        The item is stored by reference, not copied: do not mutate it later.

        Raises:
          TypeError: ``item`` is not a dict.
        """
        if not isinstance(item, dict):
            raise TypeError(f"QueuedDataStore.insert expects a dict, got {type(item).__name__}")
        with self._lock:
            data_id = self._next_id
            self._next_id += 1
            if len(self._items) >= self.capacity:
                self._num_dropped += 1
                if self.overflow == "drop_newest":
                    return data_id
                self._items.popleft()
            self._items.append((data_id, item))
            return data_id

    def __len__(self) -> int:
        """Number of pending (unacknowledged, not dropped) items."""
        with self._lock:
            return len(self._items)

    @property
    def num_dropped(self) -> int:
        """Items discarded by the overflow policy so far."""
        with self._lock:
            return self._num_dropped

    def latest_data_id(self) -> int:
        """Id of the most recent insert, or -1 if nothing was ever inserted."""
        with self._lock:
            return self._next_id - 1

    def pending_items(self, after_id: int = -1,
                      max_items: int | None = None) -> list[tuple[int, Any]]:
        """Snapshot of pending ``(id, item)`` pairs with id > ``after_id``, oldest first.

        Args:
          after_id: only ids strictly greater are returned (-1: all).
          max_items: if given, return at most this many.
        """
        if max_items is not None and max_items < 0:
            raise ValueError(f"max_items must be >= 0, got {max_items}")
        with self._lock:
            items = self._items
            n = len(items)
            if not n:
                return []
            # ids are increasing but may have gaps (drop_newest, discard): bisect by value, in
            # O(log n) lookups instead of a Python-level scan of every unacknowledged item.
            start = 0 if after_id < items[0][0] else bisect.bisect_right(items, after_id, key=_item_id)
            stop = n if max_items is None else min(n, start + max_items)
            if start >= stop:
                return []
            if n - start < start:
                # Nearer the newest end (the usual sync: everything up to the learner's last id
                # is still held until it is durable): walk from the right.
                tail = list(itertools.islice(reversed(items), n - stop, n - start))
                tail.reverse()
                return tail
            return list(itertools.islice(items, start, stop))

    def acknowledge(self, upto_id: int) -> int:
        """Removes pending items with id <= ``upto_id``; returns how many were removed."""
        if isinstance(upto_id, bool) or not isinstance(upto_id, int):
            raise TypeError(f"upto_id must be an int, got {type(upto_id).__name__}")
        removed = 0
        with self._lock:
            while self._items and self._items[0][0] <= upto_id:
                self._items.popleft()
                removed += 1
        return removed

    def discard(self, data_id: int) -> bool:
        """Removes one pending item by id (used for items that can never be sent).

        Returns True if it was pending. Does not count towards ``num_dropped``.
        """
        with self._lock:
            for i, (pid, _) in enumerate(self._items):
                if pid == data_id:
                    del self._items[i]
                    return True
                if pid > data_id:
                    break
        return False

    def __repr__(self) -> str:
        return (f"QueuedDataStore(capacity={self.capacity}, pending={len(self)}, "
                f"latest_id={self.latest_data_id()}, dropped={self.num_dropped})")

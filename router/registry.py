"""Maps the string ids that control creates to the small int handles that index the fast path's tables.

The registry owns id uniqueness inside one worker: an id is registered once, its handle is never reused while the
id is alive, and a freed handle goes back to a free list so that the Engine's arrays stay dense. It must not know
what the objects are; the media classes keep their own state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DuplicateId(ValueError):
    """Raised when an id is registered twice."""


class UnknownId(KeyError):
    """Raised when an id is not registered."""


class Registry(Generic[T]):
    """id (str) <-> handle (int) <-> object, for one entity kind (transports, producers, consumers, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._by_id: dict[str, tuple[int, T]] = {}
        self._by_handle: dict[int, T] = {}
        self._free: list[int] = []
        self._next = 0

    def add(self, object_id: str, obj: T) -> int:
        if object_id in self._by_id:
            raise DuplicateId(f"{self.kind} {object_id!r} already exists")
        handle = self._free.pop() if self._free else self._allocate()
        self._by_id[object_id] = (handle, obj)
        self._by_handle[handle] = obj
        return handle

    def create(self, object_id: str, factory: Callable[[int], T]) -> T:
        """Register the object that ``factory(handle)`` builds; nothing is registered if the factory raises."""
        if object_id in self._by_id:
            raise DuplicateId(f"{self.kind} {object_id!r} already exists")
        handle = self._free.pop() if self._free else self._allocate()
        try:
            obj = factory(handle)
        except BaseException:
            self._free.append(handle)
            raise
        self._by_id[object_id] = (handle, obj)
        self._by_handle[handle] = obj
        return obj

    def _allocate(self) -> int:
        handle = self._next
        self._next += 1
        return handle

    def get(self, object_id: str) -> T:
        try:
            return self._by_id[object_id][1]
        except KeyError:
            raise UnknownId(f"{self.kind} {object_id!r} not found") from None

    def find(self, object_id: str) -> T | None:
        entry = self._by_id.get(object_id)
        return entry[1] if entry else None

    def handle(self, object_id: str) -> int:
        try:
            return self._by_id[object_id][0]
        except KeyError:
            raise UnknownId(f"{self.kind} {object_id!r} not found") from None

    def by_handle(self, handle: int) -> T | None:
        return self._by_handle.get(handle)

    def remove(self, object_id: str) -> T:
        try:
            handle, obj = self._by_id.pop(object_id)
        except KeyError:
            raise UnknownId(f"{self.kind} {object_id!r} not found") from None
        del self._by_handle[handle]
        self._free.append(handle)
        return obj

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def ids(self) -> list[str]:
        return list(self._by_id)

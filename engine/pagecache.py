# Listing images, the page cache: recent pages keyed by (query, LMDB transaction id).
# Invariants:
# - A cached page is only served to a reader at the same LMDB transaction id it was computed
#   at, i.e. with no commit in between; pages go in and out as copies.
# - At most `size` pages; the least recently used goes first. Event-loop thread only.
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from tessera.engine.listplan import ListPage, ListQuery


class PageCache:
    """Recent pages keyed by (query, LMDB transaction id).

    A read transaction's id is the id of the last committed write, so a page computed at id
    T is exactly the page any reader at id T would compute: a hit needs no invalidation
    logic. Any commit (of anything) moves the id on and the entry is simply recomputed.
    Used from the event-loop thread only.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._map: OrderedDict[Any, tuple[int, ListPage]] = OrderedDict()

    @staticmethod
    def key(q: ListQuery) -> Any:
        try:
            key = (q.viewer_project, q.viewer_is_admin, q.sort, q.limit, q.marker,
                   tuple(sorted(q.filters.items())))
            hash(key)
        except TypeError:  # an unhashable filter value: not cached
            return None
        return key

    def get(self, key: Any, txn_id: int) -> ListPage | None:
        hit = self._map.get(key)
        if hit is None or hit[0] != txn_id:
            return None
        self._map.move_to_end(key)
        return ListPage(list(hit[1].images), hit[1].next_marker)

    def put(self, key: Any, txn_id: int, page: ListPage) -> None:
        self._map[key] = (txn_id, ListPage(list(page.images), page.next_marker))
        self._map.move_to_end(key)
        if len(self._map) > self._size:
            self._map.popitem(last=False)

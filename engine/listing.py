# Listing images: the names callers import (engine.py, members.py, http/listquery.py,
# bench/listing.py), gathered from the three modules that own them:
# - engine/listplan.py: ListQuery, ListPage, full sort order, filters, visibility, partitions;
# - engine/listscan.py: list_images, the index walk that makes one page;
# - engine/pagecache.py: PageCache, pages reused at the same LMDB transaction id.
# Invariants: nothing is defined here; every name is the owning module's object.
from tessera.engine.imgindex import SORT_KEYS
from tessera.engine.listplan import (MEMBER_STATUSES, VISIBILITIES, ListPage, ListQuery,
                                     MemberStatus, full_sort)
from tessera.engine.listscan import list_images
from tessera.engine.pagecache import PageCache

__all__ = ["SORT_KEYS", "MEMBER_STATUSES", "VISIBILITIES", "ListPage", "ListQuery",
           "MemberStatus", "full_sort", "list_images", "PageCache"]

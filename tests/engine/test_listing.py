# Listing: every filter, sort combinations, marker pagination (exact and complete) and the
# visibility matrix, checked against a brute-force reference model of Glance's rules
# (glance-api.md 1.3) over the same records.
import functools
import random

import pytest
import trio

from tessera.engine.config import EngineConfig
from tessera.engine.engine import Engine
from tessera.engine.errors import Forbidden, InvalidInput
from tessera.engine.listing import SORT_KEYS, ListQuery

PROJECTS = ["p1", "p2", "p3", None]
VIS = ["public", "private", "shared", "community"]


# -- the reference model -----------------------------------------------------------------

def ref_visible(rec, members, project, admin, vis, mstatus):
    if admin:
        if vis is None:
            return rec.visibility != "community" or rec.owner == project
        return vis == "all" or rec.visibility == vis
    can = rec.visibility in ("public", "community") or (project is not None and (
        rec.owner == project or (rec.visibility == "shared" and (
            members.get((rec.id, project)) is not None
            and mstatus in ("all", members[(rec.id, project)])))))
    if not can:
        return False
    if vis is None:
        return rec.visibility != "community" or rec.owner == project
    return vis == "all" or rec.visibility == vis


def ref_filter(rec, filters):
    if rec.status in ("killed", "deleted"):
        return False
    if rec.os_hidden is not filters.get("os_hidden", False):
        return False
    for key, want in filters.items():
        if key in ("visibility", "member_status", "os_hidden"):
            continue
        if key == "tags":
            if not all(t in rec.tags for t in want):
                return False
        elif key in ("size_min", "size_max"):
            if rec.size is None or (rec.size < want if key == "size_min" else rec.size > want):
                return False
        elif key in ("created_at", "updated_at"):
            op, when = want
            have = int(getattr(rec, key))
            if not {"gt": have > when, "gte": have >= when, "eq": have == when,
                    "neq": have != when, "lt": have < when, "lte": have <= when}[op]:
                return False
        else:
            have = getattr(rec, key) if hasattr(rec, key) else rec.properties.get(key)
            if key == "id":  # ids are case-insensitive
                want = ("in", [w.lower() for w in want[1]]) if isinstance(want, tuple) \
                    else want.lower()
            if isinstance(want, tuple):
                if have not in want[1]:
                    return False
            elif have != want:
                return False
    return True


def ref_sort_value(rec, key):
    if key == "created_at":
        return round(rec.created_at * 1e6)
    if key == "updated_at":
        return round(rec.updated_at * 1e6)
    return getattr(rec, key)


def ref_order(sort):
    keys = list(dict.fromkeys(k for k, _ in sort))
    dirs = {d for _, d in sort}
    tie = dirs.pop() if len(dirs) == 1 else "desc"
    full = [(k, dict(sort)[k]) for k in keys]
    full += [(k, tie) for k in ("created_at", "id") if k not in keys]

    def cmp(a, b):
        for key, direction in full:
            x, y = ref_sort_value(a, key), ref_sort_value(b, key)
            if x == y:
                continue
            if x is None or (y is not None and x < y):
                result = -1
            else:
                result = 1
            return result if direction == "asc" else -result
        return 0

    return functools.cmp_to_key(cmp)


def reference(records, members, q):
    filters = dict(q.filters)
    vis = filters.get("visibility")
    mstatus = filters.get("member_status", "accepted")
    rows = [r for r in records if ref_filter(r, filters)
            and ref_visible(r, members, q.viewer_project, q.viewer_is_admin, vis, mstatus)]
    rows.sort(key=ref_order(q.sort))
    return [r.id for r in rows]


def all_pages(engine, q, limit):
    ids, marker, pages = [], None, 0
    while True:
        page = engine.list_images(ListQuery(q.viewer_project, q.viewer_is_admin, q.filters,
                                            q.sort, limit, marker))
        pages += 1
        ids += [r.id for r in page.images]
        assert len(page.images) <= limit
        if page.next_marker is None:
            assert len(page.images) < limit
            return ids
        assert len(page.images) == limit and page.next_marker == page.images[-1].id
        marker = page.next_marker
        assert pages < 1000


# -- the data set --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(engine, records, members) shared by the read-only tests of this module."""
    path = tmp_path_factory.mktemp("listing")
    out = {}

    async def build():
        eng = await Engine.open(EngineConfig(data_dir=path, durable=False))
        rnd = random.Random(7)
        created = []

        async def one(i):
            fields = {
                "name": rnd.choice([None, "alpha", "beta", "Gamma", "", "delta\x00x", "é"]),
                "visibility": VIS[i % 4],
                "disk_format": rnd.choice([None, "raw", "qcow2", "iso"]),
                "container_format": rnd.choice([None, "bare", "ovf"]),
                "os_hidden": i % 9 == 0, "protected": i % 5 == 0,
                "tags": rnd.sample(["t1", "t2", "t3"], rnd.randint(0, 2)),
            }
            if i % 3 == 0:
                fields["os_distro"] = rnd.choice(["debian", "ubuntu"])
            created.append(await eng.create_image(fields, owner=PROJECTS[i % 4]))

        async with trio.open_nursery() as nursery:
            for i in range(240):
                nursery.start_soon(one, i)
        cat = eng.catalog
        deleted = set()
        for i, rec in enumerate(created):
            if i % 4 == 1:  # some become active with a size and hashes, a few killed
                def activate(txn, rec=rec, i=i):
                    cur = cat.load(txn, rec.id)
                    return cat.store(txn, cur, cur.evolve(
                        status="killed" if i % 40 == 1 else "active", size=(i * 37) % 1000,
                        checksum=f"{i:032x}", os_hash_value=f"{i:0128x}"))
                await cat.run(activate)
            elif i % 11 == 0 and not rec.protected:
                await eng.delete_image(rec.id)
                deleted.add(rec.id)
        members = {}
        for rec in created:
            if rec.visibility == "shared" and rec.id not in deleted:
                for project in ("p1", "p2", "p3"):
                    if project != rec.owner and rnd.random() < 0.5:
                        await eng.add_member(rec.id, project)
                        status = rnd.choice(["pending", "accepted", "rejected"])
                        if status != "pending":
                            await eng.update_member(rec.id, project, status)
                        members[(rec.id, project)] = status
        with eng.index.read() as txn:
            from tessera.engine.records import decode_image
            records = [decode_image(raw) for _, raw in txn.cursor(db=cat.images)]
        out["v"] = (eng, records, members)

    trio.run(build)
    yield out["v"]
    trio.run(out["v"][0].aclose)


VIEWERS = [("p1", False), ("p2", False), ("p4", False), (None, False), (None, True),
           ("p1", True)]


@pytest.mark.parametrize("project,admin", VIEWERS)
@pytest.mark.parametrize("vis", [None, "public", "private", "shared", "community", "all"])
@pytest.mark.parametrize("mstatus", [None, "pending", "rejected", "all"])
def test_visibility_matrix(dataset, project, admin, vis, mstatus):
    eng, records, members = dataset
    filters = {}
    if vis:
        filters["visibility"] = vis
    if mstatus:
        filters["member_status"] = mstatus
    q = ListQuery(project, admin, filters, limit=1000)
    want = reference(records, members, q)
    assert [r.id for r in eng.list_images(q).images] == want
    assert all_pages(eng, q, 9) == want


SORTS = [((k, d),) for k in SORT_KEYS for d in ("asc", "desc")] + [
    (("name", "asc"), ("status", "desc")),
    (("status", "asc"),),
    (("size", "desc"), ("name", "asc")),
    (("disk_format", "asc"), ("container_format", "asc")),
    (("created_at", "asc"), ("name", "desc")),
    (("container_format", "desc"), ("size", "asc"), ("id", "asc")),
    (("updated_at", "asc"), ("id", "desc")),
    (("name", "desc"), ("name", "desc")),
    (("id", "asc"), ("name", "desc")),
]


@pytest.mark.parametrize("sort", SORTS, ids=lambda s: ",".join(f"{k}:{d}" for k, d in s))
@pytest.mark.parametrize("project,admin", [("p1", False), (None, True)])
def test_sorts_paginate_exactly(dataset, sort, project, admin):
    eng, records, members = dataset
    q = ListQuery(project, admin, {}, sort, 1000)
    want = reference(records, members, q)
    assert len(want) > 20
    assert [r.id for r in eng.list_images(q).images] == want
    assert all_pages(eng, q, 7) == want


def _filters(records):
    some = next(r for r in records if r.status == "active" and not r.os_hidden)
    return [
        {"name": "alpha"}, {"name": ("in", ["alpha", "é", ""])}, {"name": None},
        {"id": some.id}, {"id": ("in", [some.id, records[3].id, "bogus"])},
        {"id": some.id.upper()},
        {"status": "active"}, {"status": ("in", ["queued", "active"])}, {"status": "killed"},
        {"container_format": "bare"}, {"disk_format": ("in", ["raw", "iso"])},
        {"owner": "p2"}, {"owner": "p2", "visibility": "public"}, {"tags": ("t1",)},
        {"tags": ("t1", "t2")}, {"size_min": 300}, {"size_max": 200},
        {"size_min": 100, "size_max": 600}, {"protected": True}, {"protected": False},
        {"os_hidden": True}, {"os_hidden": False}, {"checksum": some.checksum},
        {"os_hash_value": some.os_hash_value}, {"os_distro": "debian"},
        {"os_distro": "debian", "tags": ("t3",)},
        {"created_at": ("gte", int(some.created_at))}, {"created_at": ("lt", int(some.created_at))},
        {"created_at": ("eq", int(some.created_at))}, {"created_at": ("neq", int(some.created_at))},
        {"updated_at": ("gt", int(some.updated_at) - 1)}, {"updated_at": ("lte", 0)},
    ]


@pytest.mark.parametrize("n", range(32))
@pytest.mark.parametrize("project,admin", [("p1", False), ("p3", False), (None, True)])
@pytest.mark.parametrize("sort", [(("created_at", "desc"),), (("name", "asc"),),
                                  (("size", "asc"), ("name", "desc"))])
def test_filters(dataset, n, project, admin, sort):
    eng, records, members = dataset
    filters = _filters(records)[n]
    q = ListQuery(project, admin, filters, sort, 1000)
    want = reference(records, members, q)
    assert [r.id for r in eng.list_images(q).images] == want
    assert all_pages(eng, q, 4) == want


def test_filters_select_something(dataset):
    eng, records, members = dataset
    hits = [len(reference(records, members, ListQuery(None, True, f, limit=1000)))
            for f in _filters(records)]
    assert sum(1 for h in hits if h > 0) >= 26  # the table is not vacuous


def test_default_page_and_next_marker(dataset):
    eng, records, members = dataset
    page = eng.list_images(ListQuery(None, True))
    assert len(page.images) == 25 and page.next_marker == page.images[-1].id
    times = [r.created_at for r in page.images]
    assert times == sorted(times, reverse=True)
    assert eng.list_images(ListQuery(None, True, limit=0)).images == []


def test_bad_queries(dataset):
    eng, records, _ = dataset
    with pytest.raises(InvalidInput) as info:
        eng.list_images(ListQuery(None, True, sort=(("owner", "asc"),)))
    assert info.value.message == ("Invalid sort key: owner. It must be one of the following: "
                                  "name, status, container_format, disk_format, size, id, "
                                  "created_at, updated_at.")
    with pytest.raises(InvalidInput) as info:
        eng.list_images(ListQuery(None, True, {"visibility": "x"}))
    assert info.value.message == "Invalid visibility value: x"
    for marker in ("0b6a4f7e-3c2d-4e5f-8a9b-0c1d2e3f4a5b", "junk"):
        with pytest.raises(InvalidInput):
            eng.list_images(ListQuery(None, True, marker=marker))
    deleted = next(r for r in records if r.status == "deleted")
    with pytest.raises(InvalidInput):
        eng.list_images(ListQuery(None, True, marker=deleted.id))
    private = next(r for r in records if r.visibility == "private" and r.owner == "p2"
                   and r.status != "deleted")
    with pytest.raises(Forbidden):
        eng.list_images(ListQuery("p1", False, marker=private.id))
    for bad in ({"size_min": "x"}, {"created_at": ("between", 1)}, {"os_hidden": "maybe"},
                {"changes-since": "x"}, {"member_status": "x"}):
        with pytest.raises(InvalidInput):
            eng.list_images(ListQuery(None, True, bad))


def test_marker_may_be_filtered_out(dataset):
    """A marker that the filters exclude still positions the next page."""
    eng, records, members = dataset
    q = ListQuery(None, True, {}, (("name", "asc"), ("status", "desc")), 1000)
    full = reference(records, members, q)
    hidden = next(r for r in records if r.os_hidden and r.status not in ("deleted", "killed"))
    page = eng.list_images(ListQuery(None, True, {}, q.sort, 1000, hidden.id))
    combined = reference(records, members, ListQuery(None, True, {"os_hidden": True}, q.sort,
                                                     1000))
    merged = sorted(set(full) | set(combined), key=lambda i: [*full, *combined].index(i))
    key = ref_order(q.sort)
    by_id = {r.id: r for r in records}
    expect = [i for i in full if key(by_id[i]) > key(hidden)]
    assert [r.id for r in page.images] == expect
    assert merged  # sanity


async def test_two_thousand_images(tmp_path):
    eng = await Engine.open(EngineConfig(data_dir=tmp_path, durable=False))
    try:
        async with trio.open_nursery() as nursery:
            for i in range(2000):
                nursery.start_soon(functools.partial(
                    eng.create_image, {"name": f"n{i % 50}", "visibility": VIS[i % 4]},
                    owner=f"p{i % 3}"))
        assert eng.stats()["images"] == 2000
        with eng.index.read() as txn:
            from tessera.engine.records import decode_image
            everything = [decode_image(raw) for _, raw in txn.cursor(db=eng.catalog.images)]
        for q, n in ((ListQuery(None, True, {"visibility": "all"}), 2000),
                     (ListQuery("p1", False), 1000),
                     (ListQuery(None, True, {}, (("name", "asc"),)), 1500),
                     (ListQuery("p2", False, {"visibility": "community"},
                                (("name", "desc"),)), 500)):
            ids = all_pages(eng, q, 100)
            assert len(ids) == len(set(ids)) == n
            assert reference(everything, {}, q) == ids
    finally:
        await eng.aclose()


async def test_page_cache_follows_commits(tmp_path):
    eng = await Engine.open(EngineConfig(data_dir=tmp_path, durable=False))
    try:
        q = ListQuery(None, True, {"visibility": "all"}, limit=5)
        a = await eng.create_image({"name": "a"}, owner=None)
        first = eng.list_images(q)
        assert [r.id for r in first.images] == [a.id]
        first.images.clear()  # a caller mutating its page does not touch the cache
        assert [r.id for r in eng.list_images(q).images] == [a.id]
        b = await eng.create_image({"name": "b"}, owner=None)
        assert [r.id for r in eng.list_images(q).images] == [b.id, a.id]
        await eng.add_tag(a.id, "x")
        assert eng.list_images(q).images[1].tags == ("x",)
        await eng.delete_image(b.id)
        assert [r.id for r in eng.list_images(q).images] == [a.id]
        unhashable = ListQuery(None, True, {"name": ("in", ["a"])})  # not cached, still right
        assert [r.id for r in eng.list_images(unhashable).images] == [a.id]
    finally:
        await eng.aclose()


@pytest.mark.parametrize("sort", SORTS[:6] + SORTS[16:],
                         ids=lambda s: ",".join(f"{k}:{d}" for k, d in s))
@pytest.mark.parametrize("small", [0, 5, 100000])
def test_narrow_partitions_either_way(dataset, monkeypatch, sort, small):
    """Partitions sorted in Python (small) or the sort index walked (large): same pages."""
    from tessera.engine import listing, listscan
    monkeypatch.setattr(listscan, "SMALL_SET", small)
    eng, records, members = dataset
    monkeypatch.setattr(eng, "_pages", listing.PageCache(size=0))  # compute every page
    for q in (ListQuery("p2", False, {}, sort, 1000),
              ListQuery(None, True, {"owner": "p1"}, sort, 1000),
              ListQuery("p3", False, {"visibility": "all", "tags": ("t2",)}, sort, 1000)):
        want = reference(records, members, q)
        assert all_pages(eng, q, 6) == want

# GET /v2/images: filters, the `in:` operator, dates, sorting syntaxes, pagination links and
# every 400 with Glance's message (glance-api.md 1.3, transcript section 8).
import json

import pytest

from tessera.http.listquery import page_links, parse_time_filter, split_in_values
from tessera.http.errors import HTTPError


async def names(client, query=""):
    r = await client.get("/v2/images" + query)
    assert r.status == 200, r.body
    return [img["name"] for img in r.json()["images"]]


async def test_default_list_newest_first_with_links(api):
    for n in ("a", "b", "c"):
        await api.create(name=n)
    r = await api.get("/v2/images")
    body = r.json()
    assert [i["name"] for i in body["images"]] == ["c", "b", "a"]
    assert body["first"] == "/v2/images" and body["schema"] == "/v2/schemas/images"
    assert "next" not in body


async def test_pagination_follows_next_links(api):
    for n in range(5):
        await api.create(name=f"img{n}")
    seen, url = [], "/v2/images?limit=2"
    while url:
        body = (await api.get(url)).json()
        assert body["first"] == "/v2/images?limit=2"
        seen += [i["name"] for i in body["images"]]
        url = body.get("next")
    assert seen == ["img4", "img3", "img2", "img1", "img0"]


async def test_first_link_keeps_the_query_encoded(api):
    await api.create(name="transcript-raw")
    r = await api.get("/v2/images?name=transcript-raw&sort=name:asc,created_at:desc")
    body = r.json()
    assert [i["name"] for i in body["images"]] == ["transcript-raw"]
    assert body["first"] == "/v2/images?name=transcript-raw&sort=name%3Aasc%2Ccreated_at%3Adesc"


async def test_filters(api):
    a = await api.create(name="alpha", os_distro="debian", min_disk=1)
    b = await api.create(name="beta", disk_format="qcow2", protected=True)
    c = await api.create(name="gam, ma", os_hidden=True)
    await api.put(f"/v2/images/{a['id']}/tags/x")
    await api.put(f"/v2/images/{a['id']}/tags/y")
    await api.put(f"/v2/images/{b['id']}/tags/x")
    assert await names(api, "?name=alpha") == ["alpha"]
    assert await names(api, "?os_distro=debian") == ["alpha"]
    assert await names(api, "?disk_format=qcow2") == ["beta"]
    assert await names(api, "?tag=x") == ["beta", "alpha"]
    assert await names(api, "?tag=x&tag=y") == ["alpha"]
    assert await names(api, "?protected=true") == ["beta"]
    assert await names(api, "?protected=false") == ["alpha"]
    assert await names(api, "?os_hidden=true") == ["gam, ma"]
    assert await names(api, '?name=in:"gam, ma",alpha&os_hidden=TRUE') == ["gam, ma"]
    assert await names(api, '?name=in:"gam, ma",alpha') == ["alpha"]
    assert await names(api, "?name=in:alpha,beta&sort=name:asc") == ["alpha", "beta"]
    assert await names(api, f"?id={c['id']}&os_hidden=true") == ["gam, ma"]
    assert await names(api, "?status=queued&sort=name:asc") == ["alpha", "beta"]


async def test_size_and_date_filters(api):
    small = await api.create(name="small")
    big = await api.create(name="big")
    await api.upload(small["id"], b"s" * 10)
    await api.upload(big["id"], b"b" * 5000)
    assert await names(api, "?size_min=100") == ["big"]
    assert await names(api, "?size_max=100") == ["small"]
    assert await names(api, "?created_at=gte:2000-01-01T00:00:00Z&sort=name:asc") == \
        ["big", "small"]
    assert await names(api, "?created_at=lt:2000-01-01T00:00:00Z") == []
    assert await names(api, "?updated_at=gt:2999-01-01T00:00:00") == []


async def test_visibility_filter(api):
    await api.create(name="pub", visibility="public")
    await api.create(name="com", visibility="community")
    await api.create(name="sha")
    assert await names(api, "?visibility=public") == ["pub"]
    assert await names(api, "?visibility=community") == ["com"]
    assert await names(api, "?visibility=all&sort=name:asc") == ["com", "pub", "sha"]
    assert await names(api, "?visibility=&sort=name:asc") == \
        await names(api, "?sort=name:asc")                            # empty: ignored


async def test_sort_syntaxes(api):
    for n in ("b", "a", "c"):
        await api.create(name=n)
    assert await names(api, "?sort_key=name&sort_dir=asc") == ["a", "b", "c"]
    assert await names(api, "?sort_key=name") == ["c", "b", "a"]
    assert await names(api, "?sort=name") == ["c", "b", "a"]
    assert await names(api, "?sort=name:asc") == ["a", "b", "c"]
    assert await names(api, "?sort_key=status&sort_key=name&sort_dir=asc") == ["a", "b", "c"]


@pytest.mark.parametrize("query, message", [
    ("limit=abc", "limit param must be an integer"),
    ("limit=-1", "limit param must be positive"),
    ("sort_key=bogus", "Invalid sort key: bogus. It must be one of the following: name, "
                       "status, container_format, disk_format, size, id, created_at, "
                       "updated_at."),
    ("sort_dir=sideways", "Invalid sort direction: sideways"),
    ("sort=name&sort_key=id", "Old and new sorting syntax cannot be combined"),
    ("sort_key=name&sort_key=id&sort_dir=asc&sort_dir=desc&sort_dir=asc",
     "Number of sort dirs does not match the number of sort keys"),
    ("sort=name:up", "Invalid sort direction: up"),
    ("visibility=everyone", "Invalid visibility value: everyone"),
    ("member_status=maybe", "Invalid status: maybe"),
    ("changes-since=2020-01-01", 'The "changes-since" filter is no longer available on v2.'),
    ("created_at=yesterday", 'Bad "created_at" query filter format. Use ISO 8601 DateTime '
                             'notation.'),
    ("created_at=foo:2020-01-01T00:00:00Z", "Unable to filter by unknown operator 'foo'."),
    ("size_min=big", "Unable to filter on a range with a non-numeric value."),
    ("os_hidden=maybe", "Invalid value 'maybe' for 'os_hidden' filter. Valid values are "
                        "'true' or 'false'."),
    ("protected=yes", "Invalid value 'yes' for 'protected' filter. Valid values are "
                      "'true' or 'false'."),
    ('name=in:"a,b', 'Invalid filter value "a,b. The quote is not closed.'),
])
async def test_bad_queries_are_400(api, query, message):
    r = await api.get("/v2/images?" + query)
    assert r.status == 400, (query, r.body)
    assert r.json()["message"] == message + "<br /><br />\n\n\n"


async def test_unknown_marker_is_400(api):
    r = await api.get("/v2/images?marker=613e7e5b-acd4-4521-9a44-01f0a2c4bced")
    assert r.status == 400
    assert r.json()["message"].startswith(
        "No image found with ID 613e7e5b-acd4-4521-9a44-01f0a2c4bced")


async def test_limit_is_capped_and_zero_is_empty(api):
    await api.create(name="one")
    assert await names(api, "?limit=0") == []
    assert await names(api, "?limit=100000") == ["one"]


def test_in_values_quoting():
    assert split_in_values('"a, b",c') == ["a, b", "c"]
    assert split_in_values("a,b,c") == ["a", "b", "c"]
    for bad in ('a"b",c', '"a"b,c', '"abc'):
        with pytest.raises(HTTPError):
            split_in_values(bad)


def test_time_filter_ops():
    assert parse_time_filter("created_at", "2020-01-01T00:00:00Z") == ("eq", 1577836800)
    assert parse_time_filter("created_at", "neq:2020-01-01T01:00:00+01:00") == \
        ("neq", 1577836800)
    assert parse_time_filter("created_at", "lte:2020-01-01") == ("lte", 1577836800)


def test_links_take_the_last_value_in_first_seen_order():
    links = page_links([("tag", "a"), ("limit", "2"), ("tag", "b"), ("marker", "m")], "n")
    assert links == {"first": "/v2/images?tag=b&limit=2",
                     "next": "/v2/images?tag=b&limit=2&marker=n"}


async def test_list_body_is_plain_json_and_follows_changes(api):
    img = await api.create(name="before")
    first = await api.get("/v2/images?limit=1")
    body = json.loads(first.body)
    assert first.body == json.dumps(body, ensure_ascii=False).encode()   # byte for byte
    assert body["next"] == f"/v2/images?limit=1&marker={img['id']}"
    await api.patch(f"/v2/images/{img['id']}",
                    [{"op": "replace", "path": "/name", "value": "after"}])
    assert await names(api) == ["after"]
    assert (await api.get(f"/v2/images/{img['id']}")).json()["name"] == "after"
    await api.upload(img["id"], b"x" * 10)
    shown = (await api.get("/v2/images")).json()["images"][0]
    assert shown["status"] == "active" and shown["size"] == 10


def test_image_json_cache_is_bounded():
    from tessera.engine.records import ImageRecord
    from tessera.http.render import ImageJsonCache
    cache = ImageJsonCache(capacity=3)
    recs = [ImageRecord(id=f"{i:08d}-0000-0000-0000-000000000000", name=str(i),
                        status="queued", visibility="shared", protected=False,
                        os_hidden=False, checksum=None, os_hash_algo=None, os_hash_value=None,
                        size=None, virtual_size=None, disk_format=None,
                        container_format=None, min_disk=0, min_ram=0, owner=None,
                        created_at=0.0, updated_at=float(i)) for i in range(10)]
    for rec in recs:
        assert json.loads(cache(rec))["name"] == rec.name
    assert len(cache._items) == 3

"""Listing: prefix, delimiter, start_after, limit/truncation/next_marker, UTF-8 binary order,
1024-byte keys sharing long prefixes, and common prefixes. Every case is checked against a
reference model computed from the key set, and by paging through with next_marker."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buckets import errors


def model(keys: list[str], prefix: str = "", delimiter: str = "", start_after: str = "",
          limit: int = 1000) -> tuple[list[str], list[str], bool]:
    """Reference S3 ListObjects semantics over a key set (UTF-8 binary order)."""
    ordered = sorted(set(keys), key=lambda k: k.encode())
    entries: list[tuple[str, str]] = []  # (kind, value) in order
    for k in ordered:
        if not k.startswith(prefix) or k.encode() <= start_after.encode():
            continue
        if delimiter:
            idx = k.find(delimiter, len(prefix))
            if idx >= 0:
                cp = k[: idx + len(delimiter)]
                if cp.encode() <= start_after.encode():
                    continue
                if entries and entries[-1] == ("p", cp):
                    continue
                entries.append(("p", cp))
                continue
        entries.append(("o", k))
    page = entries[:limit]
    return [v for t, v in page if t == "o"], [v for t, v in page if t == "p"], len(entries) > limit


async def put_keys(store, bucket: str, keys: list[str]) -> None:
    for k in keys:
        await store.put_object(bucket, k, k.encode()[:16], len(k.encode()[:16]))


async def list_all(store, bucket, prefix="", delimiter="", limit=1000) -> tuple[list[str], list[str], int]:
    """Follow next_marker to the end; return every key, prefix, and the number of pages."""
    keys: list[str] = []
    prefixes: list[str] = []
    marker = ""
    pages = 0
    while True:
        res = await store.list_objects(bucket, prefix=prefix, delimiter=delimiter, start_after=marker, limit=limit)
        pages += 1
        assert len(res.objects) + len(res.prefixes) <= limit
        keys += [o.key for o in res.objects]
        prefixes += res.prefixes
        if not res.is_truncated:
            assert res.next_marker is None
            return keys, prefixes, pages
        assert res.next_marker, "a truncated page must say where to continue"
        assert res.next_marker.encode() > marker.encode(), "next_marker must advance"
        marker = res.next_marker
        assert pages < 10_000


TREE = [
    "a", "a/b", "a/b/c", "a/b/d", "a/c", "a-b", "a0", "b", "b/", "b//x", "photos/2024/jan/1.jpg",
    "photos/2024/jan/2.jpg", "photos/2024/feb/1.jpg", "photos/2025/x.jpg", "photos/readme", "z/z/z",
    "é", "éa/b", "Z", "~tilde", "日本/語", "😀/smile", "ｆｕｌｌ", "a\u00ff", "a\u0100",
]


@pytest.fixture
async def tree(store, bucket) -> str:
    await put_keys(store, bucket, TREE)
    return bucket


@pytest.mark.parametrize("prefix,delimiter,start_after,limit", [
    ("", "", "", 1000),
    ("", "/", "", 1000),
    ("a", "", "", 1000),
    ("a/", "/", "", 1000),
    ("a/b", "/", "", 1000),
    ("photos/", "/", "", 1000),
    ("photos/2024/", "/", "", 1000),
    ("photos/20", "/", "", 1000),
    ("", "/", "a/", 1000),
    ("", "/", "a", 1000),
    ("", "", "b/", 1000),
    ("", "", "zzz", 1000),
    ("", "", "\U0010ffff", 1000),
    ("nomatch", "/", "", 1000),
    ("", "/", "", 3),
    ("", "", "", 1),
    ("photos/", "/", "photos/2024/", 1),
    ("", "2024", "", 1000),  # multi-character delimiter
    ("", "jan", "", 1000),
    ("b/", "/", "", 1000),
    ("é", "/", "", 1000),
])
async def test_listing_matches_model(store, tree, prefix, delimiter, start_after, limit) -> None:
    res = await store.list_objects(tree, prefix=prefix, delimiter=delimiter, start_after=start_after, limit=limit)
    keys, prefixes, truncated = model(TREE, prefix, delimiter, start_after, limit)
    assert [o.key for o in res.objects] == keys
    assert res.prefixes == prefixes
    assert res.is_truncated == truncated
    if truncated:
        last = max([k.encode() for k in keys] + [p.encode() for p in prefixes])
        assert res.next_marker == last.decode()


async def test_objects_carry_their_info(store, tree) -> None:
    res = await store.list_objects(tree, prefix="photos/2025/")
    [obj] = res.objects
    head = await store.head_object(tree, "photos/2025/x.jpg")
    assert (obj.key, obj.size, obj.etag, obj.last_modified) == (head.key, head.size, head.etag, head.last_modified)


async def test_utf8_binary_order_not_code_point_or_locale(store, bucket) -> None:
    # U+FFFD (EF BF BD) < U+10000 (F0 90 80 80) in UTF-8, though UTF-16 would order them otherwise
    keys = ["\ufffd", "\U00010000", "z", "Z", "é", "e", "\u00ff", "\u0100", "a b", "a+b", "a/b", "a.b", "\x7f"]
    await put_keys(store, bucket, keys)
    res = await store.list_objects(bucket)
    assert [o.key for o in res.objects] == sorted(keys, key=lambda k: k.encode())


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize("delimiter", ["", "/"])
async def test_paging_with_next_marker_visits_everything_once(store, tree, limit, delimiter) -> None:
    keys, prefixes, pages = await list_all(store, tree, delimiter=delimiter, limit=limit)
    all_keys, all_prefixes, _ = model(TREE, delimiter=delimiter, limit=10**6)
    assert keys == all_keys
    assert prefixes == all_prefixes
    total = len(all_keys) + len(all_prefixes)
    assert pages == max(1, -(-total // limit))  # a full last page is not marked truncated


async def test_limit_zero_and_empty_bucket(store, tree) -> None:
    res = await store.list_objects(tree, limit=0)
    assert (res.objects, res.prefixes, res.is_truncated) == ([], [], False)
    await store.make_bucket("empty")
    res = await store.list_objects("empty", delimiter="/")
    assert (res.objects, res.prefixes, res.is_truncated, res.next_marker) == ([], [], False, None)


async def test_listing_does_not_leak_across_buckets(store, bucket) -> None:
    await store.make_bucket("bkt2")
    await store.make_bucket("bkt0")
    await put_keys(store, "bkt0", ["zzz"])
    await put_keys(store, bucket, ["a", "m"])
    await put_keys(store, "bkt2", ["0", "a", "b"])
    assert [o.key for o in (await store.list_objects(bucket)).objects] == ["a", "m"]
    assert [o.key for o in (await store.list_objects(bucket, start_after="m")).objects] == []
    assert [o.key for o in (await store.list_objects("bkt2", prefix="a")).objects] == ["a"]
    assert [o.key for o in (await store.list_objects("bkt0", start_after="a")).objects] == ["zzz"]


def long_key(stem: str, tail: str, total: int = 1024) -> str:
    return (stem * total)[: total - len(tail.encode())] + tail


LONG_STEM = "deep/" + "x" * 890 + "/"  # 896 bytes shared by every long key


@pytest.fixture
async def long_tree(store, bucket) -> tuple[str, list[str]]:
    keys = [LONG_STEM + f"{i:03d}/" + "y" * (1024 - len(LONG_STEM) - 4 - (i % 3)) for i in range(12)]
    keys += [LONG_STEM + "a", LONG_STEM + "a/" + "q" * 50, LONG_STEM + "zz"]
    keys += ["deep/", "deep/short", "deep0", "dee"]  # short keys around the long-key records
    keys += [long_key("p/", "end"), long_key("p/", "end2"), long_key("p/", "én")]  # other long stem
    assert all(len(k.encode()) <= 1024 for k in keys)
    assert sum(len(k.encode()) == 1024 for k in keys) >= 7
    await put_keys(store, bucket, keys)
    return bucket, keys


async def test_long_keys_round_trip(store, long_tree) -> None:
    bucket, keys = long_tree
    for k in keys:
        head = await store.head_object(bucket, k)
        assert head.key == k
    res = await store.list_objects(bucket)
    assert [o.key for o in res.objects] == sorted(keys, key=lambda k: k.encode())


@pytest.mark.parametrize("limit", [1, 2, 5])
async def test_long_keys_page_by_page(store, long_tree, limit) -> None:
    bucket, keys = long_tree
    got, prefixes, _ = await list_all(store, bucket, limit=limit)
    assert prefixes == []
    assert got == sorted(keys, key=lambda k: k.encode())


@pytest.mark.parametrize("prefix,delimiter", [
    (LONG_STEM, ""),
    (LONG_STEM, "/"),
    (LONG_STEM + "00", "/"),
    (LONG_STEM + "a", "/"),
    ("deep/", "/"),
    ("", "/"),
    (LONG_STEM[:479], "/"),
    (LONG_STEM[:480], ""),
])
@pytest.mark.parametrize("limit", [1, 3, 1000])
async def test_long_prefixes_and_delimiters(store, long_tree, prefix, delimiter, limit) -> None:
    bucket, keys = long_tree
    got, prefixes, _ = await list_all(store, bucket, prefix=prefix, delimiter=delimiter, limit=limit)
    want_keys, want_prefixes, _ = model(keys, prefix, delimiter, limit=10**6)
    assert got == want_keys
    assert prefixes == want_prefixes


async def test_long_key_delete_and_overwrite(store, long_tree) -> None:
    bucket, keys = long_tree
    victims = keys[:12:2]
    for k in victims:
        assert (await store.delete_object(bucket, k)).deleted
    await store.put_object(bucket, keys[1], b"new", 3)
    res = await store.list_objects(bucket, limit=10**4)
    remaining = sorted(set(keys) - set(victims), key=lambda k: k.encode())
    assert [o.key for o in res.objects] == remaining
    assert (await store.head_object(bucket, keys[1])).size == 3
    for k in victims:
        with pytest.raises(errors.NoSuchKey):
            await store.head_object(bucket, k)
    assert store.registry.usage[bucket][0] == len(remaining)


KEY_ALPHABET = st.sampled_from(["a", "b", "/", ".", "é", "z", "-", "\U0001F600"])  # "." makes ./.. segments


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(keys=st.lists(st.text(KEY_ALPHABET, min_size=1, max_size=6), min_size=1, max_size=25, unique=True),
       prefix=st.text(KEY_ALPHABET, max_size=2), delimiter=st.sampled_from(["", "/", "a", "é/"]),
       start_after=st.text(KEY_ALPHABET, max_size=3), limit=st.integers(1, 6))
def test_listing_property(tmp_path_factory, keys, prefix, delimiter, start_after, limit) -> None:
    import asyncio

    from buckets import Store

    async def run() -> None:
        store = await Store.open([str(tmp_path_factory.mktemp("d") / f"d{i}") for i in range(2)], sync=False,
                                 partitions=16)
        try:
            await store.make_bucket("prop")
            await put_keys(store, "prop", keys)
            res = await store.list_objects("prop", prefix, delimiter, start_after, limit)
            want = model(keys, prefix, delimiter, start_after, limit)
            assert ([o.key for o in res.objects], res.prefixes, res.is_truncated) == want
            got, prefixes, _ = await list_all(store, "prop", prefix, delimiter, limit)
            all_keys, all_prefixes, _ = model(keys, prefix, delimiter, limit=10**6)
            assert (got, prefixes) == (all_keys, all_prefixes)
        finally:
            await store.close()

    asyncio.run(run())

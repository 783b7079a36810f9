"""buckets.s3.tagrules: S3's tag-set rules, the x-amz-tagging header and the Tagging document."""

from __future__ import annotations

import pytest

from buckets.errors import InvalidArgument, MalformedXML
from buckets.s3 import tagrules
from buckets.s3.tagrules import InvalidTag, TagCountExceeded


def doc(*pairs: tuple[str, str], extra: str = "") -> bytes:
    tags = "".join(f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in pairs)
    return f'<Tagging xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><TagSet>{tags}</TagSet>{extra}</Tagging>'.encode()


def test_header_pairs_plus_and_percent_encoding_and_bare_keys():
    assert tagrules.parse_header("a=b&c=d") == {"a": "b", "c": "d"}
    assert tagrules.parse_header("my+key=two%20words&k%C3%A9y=%C3%BC") == {"my key": "two words", "kéy": "ü"}
    assert tagrules.parse_header("foo=bar&bar") == {"foo": "bar", "bar": ""}
    assert tagrules.parse_header("empty=") == {"empty": ""}
    assert tagrules.parse_header("") == {} and tagrules.parse_header(None) == {}
    assert tagrules.parse_header("a=b&&c=d&") == {"a": "b", "c": "d"}
    assert tagrules.parse_header("eq=a%3Db") == {"eq": "a=b"}  # an encoded '=' is part of the value


@pytest.mark.parametrize("header", ["a=1&a=2", "TagSet=[{Key=string,Value=string}]", "k=%FF", "a=b=c"])
def test_header_syntax_errors_are_invalid_argument(header):
    with pytest.raises(InvalidArgument) as exc:
        tagrules.parse_header(header)
    assert exc.value.message == tagrules.HEADER_SYNTAX
    assert exc.value.extra["ArgumentName"] == "x-amz-tagging"


def test_header_content_is_checked_as_tags():
    with pytest.raises(InvalidTag, match="The TagKey you have provided is invalid"):
        tagrules.parse_header("TagSet%3D%5B%7BKey%3Dstring%2CValue%3Dstring%7D%5D")
    with pytest.raises(TagCountExceeded, match="Object tags cannot be greater than 10"):
        tagrules.parse_header("&".join(f"k{i}=v" for i in range(11)))
    assert len(tagrules.parse_header("&".join(f"k{i}=v" for i in range(10)))) == 10


def test_limits_counted_in_utf16_units():
    assert tagrules.validate({"k" * 128: "v" * 256}) == {"k" * 128: "v" * 256}
    with pytest.raises(InvalidTag, match="TagKey you have provided is too long"):
        tagrules.validate({"k" * 129: "v"})
    with pytest.raises(InvalidTag, match="TagValue you have provided is too long"):
        tagrules.validate({"k": "v" * 257})
    astral = "\U0001d400"  # a letter beyond the BMP: two UTF-16 units
    assert tagrules.utf16_length(astral) == 2
    tagrules.validate({astral * 64: "x"})
    with pytest.raises(InvalidTag):
        tagrules.validate({astral * 64 + "a": "x"})


@pytest.mark.parametrize("key", ["a b", "x_y.z:w/=+-@", "clé", "日本", "٣", "tab\u00a0nbsp"])
def test_allowed_characters(key):
    assert tagrules.validate({key: key}) == {key: key}


@pytest.mark.parametrize("bad", ["semi;colon", "star*", "quote\"", "new\nline", "brace{", "comma,", "tab\tx", "euro€"])
def test_other_characters_are_invalid(bad):
    # Symbols outside the set (currency, punctuation), control characters and tabs are refused.
    with pytest.raises(InvalidTag, match="TagKey you have provided is invalid"):
        tagrules.validate({bad: "v"})
    with pytest.raises(InvalidTag, match="TagValue you have provided is invalid"):
        tagrules.validate({"k": bad})


def test_reserved_prefix_empty_key_and_duplicates():
    with pytest.raises(InvalidTag, match="Your TagKey cannot be prefixed with aws:"):
        tagrules.validate({"aws:x": "v"})
    with pytest.raises(InvalidTag, match="System tags cannot be added/updated by requester"):
        tagrules.validate({"aws:x": "v"}, bucket=True)
    assert tagrules.validate({"AWS:x": "v"}) == {"AWS:x": "v"}  # the prefix is case-sensitive
    with pytest.raises(InvalidTag, match="The TagKey you have provided is invalid"):
        tagrules.validate({"": "v"})
    with pytest.raises(InvalidTag, match="Cannot provide multiple Tags with the same key"):
        tagrules.validate([("a", "1"), ("a", "2")])


def test_bucket_limit_is_fifty():
    fifty = {f"k{i}": "v" for i in range(50)}
    assert tagrules.validate(fifty, bucket=True) == fifty
    with pytest.raises(TagCountExceeded, match="Bucket tag count cannot be greater than 50") as exc:
        tagrules.validate({**fifty, "one-more": "v"}, bucket=True)
    assert exc.value.code == "BadRequest" and exc.value.status == 400
    with pytest.raises(TagCountExceeded):
        tagrules.validate({f"k{i}": "v" for i in range(11)})


def test_document_round_trip_and_empty_set():
    tags = tagrules.parse_document_tags(doc(("b", "2"), ("a", " spaced "), ("empty", "")))
    assert tags == {"b": "2", "a": " spaced ", "empty": ""}
    assert tagrules.parse_document_tags(tagrules.tagging_xml(tags)) == tags
    assert tagrules.parse_document_tags(b"<Tagging><TagSet/></Tagging>") == {}
    out = tagrules.tagging_xml({"z": "1", "a": "2"}).decode()
    assert out.index("<Key>a</Key>") < out.index("<Key>z</Key>")


@pytest.mark.parametrize("body", [
    b"<Tagging/>",
    b"<Tagging><TagSet/><TagSet/></Tagging>",
    b"<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>",
    b"<Tagging><TagSet><Tag><Value>v</Value></Tag></TagSet></Tagging>",
    b"<Tagging><TagSet><Tag><Key>k</Key><Key>j</Key><Value>v</Value></Tag></TagSet></Tagging>",
    b"<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value><Other/></Tag></TagSet></Tagging>",
    b"<Tagging><TagSet><Other/></TagSet></Tagging>",
    b"<Tagging><TagSet><Tag><Key><b>k</b></Key><Value>v</Value></Tag></TagSet></Tagging>",
    b"<NotTagging><TagSet/></NotTagging>",
    b"<Tagging><TagSet>",
])
def test_malformed_documents(body):
    with pytest.raises(MalformedXML):
        tagrules.parse_document_tags(body)


def test_document_values_are_validated():
    with pytest.raises(InvalidTag, match="TagValue"):
        tagrules.parse_document_tags(doc(("k", "a&amp;b")))
    with pytest.raises(TagCountExceeded):
        tagrules.parse_document_tags(doc(*[(f"k{i}", "v") for i in range(11)]))


def test_directive():
    assert tagrules.directive({}) == "COPY"
    assert tagrules.directive({"x-amz-tagging-directive": "replace"}) == "REPLACE"
    with pytest.raises(InvalidArgument) as exc:
        tagrules.directive({"x-amz-tagging-directive": "MERGE"})
    assert exc.value.extra["ArgumentName"] == "x-amz-tagging-directive"

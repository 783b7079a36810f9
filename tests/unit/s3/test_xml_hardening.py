"""The one parser for client XML (`buckets.s3.xmlio.parse_document`): what it accepts, and
every hostile document class it must refuse as MalformedXML (never another exception,
never an expanded entity, never a file read)."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buckets.errors import MalformedXML
from buckets.s3.xmlio import (
    MAX_REQUEST_XML,
    MAX_XML_DEPTH,
    MAX_XML_ELEMENTS,
    S3_NS,
    XmlBuilder,
    XmlNode,
    parse_document,
)

DELETE = b"<Delete><Object><Key>k</Key></Object></Delete>"


def refused(body: bytes, root: str = "Delete") -> None:
    with pytest.raises(MalformedXML) as info:
        parse_document(body, root)
    assert info.value.code == "MalformedXML" and info.value.status == 400


def keys(doc: XmlNode) -> list[str | None]:
    return [o.child_text("Key") for o in doc.find_all("Object")]


# --- what is accepted ----------------------------------------------------------------------


def test_plain_document():
    doc = parse_document(DELETE, "Delete")
    assert doc == XmlNode("Delete", "", [XmlNode("Object", "", [XmlNode("Key", "k", [])])])


@pytest.mark.parametrize("body", [
    f'<Delete xmlns="{S3_NS}"><Object><Key>k</Key></Object></Delete>'.encode(),
    f'<s3:Delete xmlns:s3="{S3_NS}"><s3:Object><s3:Key>k</s3:Key></s3:Object></s3:Delete>'.encode(),
    b'<?xml version="1.0" encoding="UTF-8"?>\n' + DELETE,
    b"<?xml version='1.0' encoding='utf-8' standalone='yes'?>" + DELETE,
    b'<?xml version="1.0"?>' + DELETE,
    b'<?xml version="1.0" encoding="US-ASCII"?>' + DELETE,
    codecs.BOM_UTF8 + DELETE,
    b"<!-- a comment -->" + DELETE + b"<!-- another -->\n",
    b"\n  " + DELETE + b"\n",
], ids=["default-ns", "prefixed-ns", "decl-utf8", "decl-standalone", "decl-no-encoding",
        "decl-us-ascii", "utf8-bom", "comments", "whitespace"])
def test_accepted_forms(body):
    assert keys(parse_document(body, "Delete")) == ["k"]


def test_text_references_cdata_and_unicode():
    body = ("<Delete><Object><Key>a&amp;b&lt;c&gt;&quot;&apos;&#65;&#x42;<![CDATA[<z>&amp;]]>"
            " é€😀 </Key></Object></Delete>").encode()
    assert keys(parse_document(body, "Delete")) == ["a&b<c>\"'AB<z>&amp; é€😀 "]


def test_text_is_what_precedes_the_first_child():
    doc = parse_document(b"<Delete>  lead <Quiet> true </Quiet> tail <Object/></Delete>", "Delete")
    assert doc.text == "lead"  # stripped: the element has children
    assert doc.child_text("Quiet") == " true "  # a leaf keeps its text as sent
    assert doc.find("Object") == XmlNode("Object", "", [])


def test_builder_output_round_trips():
    names = ["plain", "a&b<c>d\"e'f", "tab\there", "cr\rlf\n", " spaces ", "日本語/ключ", "%2F+?#"]
    out = XmlBuilder("Delete")
    for name in names:
        out.open("Object").elem("Key", name).close()
    assert keys(parse_document(out.finish(), "Delete")) == names


def test_depth_and_element_bounds_are_inclusive():
    nested = b"<Delete>" + b"<a>" * (MAX_XML_DEPTH - 1) + b"</a>" * (MAX_XML_DEPTH - 1) + b"</Delete>"
    node = parse_document(nested, "Delete")
    depth = 1
    while node.children:
        node, depth = node.children[0], depth + 1
    assert depth == MAX_XML_DEPTH
    many = b"<Delete>" + b"<a/>" * (MAX_XML_ELEMENTS - 1) + b"</Delete>"
    assert len(parse_document(many, "Delete").children) == MAX_XML_ELEMENTS - 1


def test_largest_legitimate_complete_is_accepted():
    part = ("<Part><PartNumber>{}</PartNumber><ETag>\"0123456789abcdef0123456789abcdef\"</ETag>"
            "<ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>")
    body = ("<CompleteMultipartUpload>" + "".join(part.format(n) for n in range(1, 10001))
            + "</CompleteMultipartUpload>").encode()
    assert len(body) < MAX_REQUEST_XML
    doc = parse_document(body, "CompleteMultipartUpload")
    assert len(doc.find_all("Part")) == 10000
    assert doc.children[-1].child_text("PartNumber") == "10000"


# --- what is refused -----------------------------------------------------------------------

LOL = ('<!DOCTYPE Delete [<!ENTITY lol0 "lol">'
       + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
       + ']><Delete><Object><Key>&lol9;</Key></Object></Delete>').encode()

HOSTILE = {
    "deep-5000": b"<Delete>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</Delete>",
    "deep-just-over": b"<Delete>" + b"<a>" * MAX_XML_DEPTH + b"</a>" * MAX_XML_DEPTH + b"</Delete>",
    "deep-unclosed": b"<Delete>" + b"<a>" * 100_000,
    "element-flood": b"<Delete>" + b"<a/>" * MAX_XML_ELEMENTS + b"</Delete>",
    "doctype": b'<!DOCTYPE Delete SYSTEM "file:///etc/passwd">' + DELETE,
    "doctype-after-long-comment": b"<!--" + b"x" * 8192 + b'--><!DOCTYPE Delete SYSTEM "file:///etc/passwd">'
                                  + DELETE,
    "doctype-after-whitespace": b'<?xml version="1.0"?>' + b" " * 10_000 + b"<!DOCTYPE Delete>" + DELETE,
    "doctype-empty-subset": b"<!DOCTYPE Delete []>" + DELETE,
    "internal-entity": b'<!DOCTYPE Delete [<!ENTITY e "k">]><Delete><Object><Key>&e;</Key></Object></Delete>',
    "external-entity": b'<!DOCTYPE Delete [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                       b"<Delete><Object><Key>&e;</Key></Object></Delete>",
    "external-public": b'<!DOCTYPE Delete PUBLIC "-//x//y" "http://127.0.0.1:9/x.dtd">' + DELETE,
    "parameter-entity": b'<!DOCTYPE Delete [<!ENTITY % p "<!ENTITY e \'k\'>"> %p;]>'
                        b"<Delete><Object><Key>&e;</Key></Object></Delete>",
    "external-parameter-entity": b'<!DOCTYPE Delete [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>' + DELETE,
    "billion-laughs": LOL,
    "undefined-entity": b"<Delete><Object><Key>&e;</Key></Object></Delete>",
    "pi-prolog": b'<?xml-stylesheet type="text/xsl" href="file:///etc/passwd"?>' + DELETE,
    "pi-inside": b"<Delete><?php system('id'); ?><Object><Key>k</Key></Object></Delete>",
    "pi-after-root": DELETE + b"<?evil?>",
    "xml-decl-not-first": b" " + b'<?xml version="1.0"?>' + DELETE,
    "utf16-entity": '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE Delete [<!ENTITY e "k">]>'
                    '<Delete><Object><Key>&e;</Key></Object></Delete>'.encode("utf-16"),
    "utf16-le-bom": DELETE.decode().encode("utf-16"),
    "utf16-be-bom": codecs.BOM_UTF16_BE + DELETE.decode().encode("utf-16-be"),
    "utf16-le-no-bom": DELETE.decode().encode("utf-16-le"),
    "utf16-be-no-bom": DELETE.decode().encode("utf-16-be"),
    "utf32": DELETE.decode().encode("utf-32"),
    "declared-latin1": b'<?xml version="1.0" encoding="ISO-8859-1"?>' + DELETE,
    "declared-utf16-in-utf8": b'<?xml version="1.0" encoding="UTF-16"?>' + DELETE,
    "declared-ascii-not-ascii": '<?xml version="1.0" encoding="US-ASCII"?><Delete><Object><Key>é</Key>'
                                '</Object></Delete>'.encode(),
    "latin1-bytes": b"<Delete><Object><Key>caf\xe9</Key></Object></Delete>",
    "invalid-utf8": b"<Delete><Object><Key>\xc3\x28\xed\xa0\x80</Key></Object></Delete>",
    "nul": b"<Delete><Object><Key>a\x00b</Key></Object></Delete>",
    "nul-reference": b"<Delete><Object><Key>a&#0;b</Key></Object></Delete>",
    "control-reference": b"<Delete><Object><Key>a&#x1;b</Key></Object></Delete>",
    "garbage": bytes(range(256)) * 4,
    "not-xml": b"not xml at all",
    "json": b'{"Objects": [{"Key": "k"}]}',
    "empty": b"",
    "whitespace": b" \r\n\t",
    "comment-only": b"<!-- nothing -->",
    "truncated": b"<Delete><Object><Key>k</Key>",
    "wrong-root": b"<Other><Object><Key>k</Key></Object></Other>",
    "wrong-root-deep": b"<Other>" + b"<a>" * 5000,
    "two-roots": DELETE + DELETE,
    "trailing-text": DELETE + b"junk",
    "unbound-prefix": b"<s3:Delete><Object><Key>k</Key></Object></s3:Delete>",
    "oversize": b"<Delete>" + b" " * MAX_REQUEST_XML + b"</Delete>",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_documents_are_malformed_xml(name):
    refused(HOSTILE[name])


def test_external_entity_never_reads_the_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    for body in (f'<!DOCTYPE Delete [<!ENTITY e SYSTEM "{secret.as_uri()}">]>'
                 f"<Delete><Object><Key>&e;</Key></Object></Delete>",
                 f'<!--{"x" * 5000}--><!DOCTYPE Delete [<!ENTITY e SYSTEM "{secret}">]>'
                 f"<Delete><Object><Key>&e;</Key></Object></Delete>"):
        refused(body.encode())


def test_refusal_is_the_documented_message():
    with pytest.raises(MalformedXML) as info:
        parse_document(HOSTILE["deep-5000"], "Delete")
    assert "not well-formed" in info.value.message


def test_oversize_names_the_size():
    with pytest.raises(MalformedXML) as info:
        parse_document(HOSTILE["oversize"], "Delete")
    assert "maximum allowed size" in info.value.message


# --- any input: MalformedXML or a tree, nothing else ---------------------------------------

_FRAGMENTS = st.sampled_from([
    "<Delete>", "</Delete>", "<Object>", "</Object>", "<Key>", "</Key>", "<a>", "</a>", "<a/>",
    "<!DOCTYPE Delete>", "<!ENTITY e 'x'>", "&e;", "&amp;", "&#0;", "&#x10FFFF;", "<?pi?>",
    '<?xml version="1.0"?>', "<!--", "-->", "<![CDATA[", "]]>", "[", "]", "%p;", "k", " ",
    "\x00", "é", "\ufeff", "\ud800", 'xmlns="urn:x"', "xmlns:s3='u'", "s3:",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=40), st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_fragment_soup_only_ever_malformed(pieces, encoding):
    body = "".join(pieces).encode(encoding, "surrogatepass" if encoding != "latin-1" else "replace")
    try:
        doc = parse_document(body, "Delete")
    except MalformedXML:
        return
    assert doc.name == "Delete"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_ever_malformed(body):
    try:
        doc = parse_document(body, "Delete")
    except MalformedXML:
        return
    assert doc.name == "Delete"

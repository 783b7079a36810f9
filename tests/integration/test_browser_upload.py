"""A real browser against the real server: headless Chromium (Playwright, Debian's chromium
package) on a page served from another origin (a local http server on its own port).

* The page submits an HTML form made with boto3's ``generate_presigned_post``; the server
  stores the file and redirects back to the page; boto3 then reads the object back.
* The page ``fetch()``es a FormData POST and reads the answer (CORS on an actual response).
* The page ``fetch()``es a PUT to a presigned URL: the browser's preflight succeeds with a
  CORS rule for the page's origin (the object is stored) and fails without one (nothing is).

Skipped, with the reason, when Playwright or a runnable Chromium is missing (``make test``
installs both: the ``test`` extras and the ``tools`` target).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from browserkit import launch_browser
from botocore.exceptions import ClientError

from serverproc import free_port


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    yield from launch_browser()


class PageServer:
    """Pages of another origin: ``pages[path]`` is served as HTML; every request is recorded."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.requests: list[str] = []
        self.port = free_port()
        pages, requests = self.pages, self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                requests.append(self.path)
                body = pages.get(urlsplit(self.path).path, "<html><body>done</body></html>").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pages() -> Iterator[PageServer]:
    srv = PageServer()
    try:
        yield srv
    finally:
        srv.close()


def _html_attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def absent(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return exc.response["Error"]["Code"] in ("404", "NoSuchKey")
    return False


def test_form_post_from_another_origin(server, s3, bucket, browser, pages):
    done = f"{pages.origin}/done"
    signer = server.client(signature_version="s3v4")
    doc = signer.generate_presigned_post(
        bucket, "browser/${filename}",
        Fields={"success_action_redirect": done, "Content-Type": "text/plain", "x-amz-meta-from": "chromium"},
        Conditions=[{"success_action_redirect": done}, {"Content-Type": "text/plain"},
                    {"x-amz-meta-from": "chromium"}, ["content-length-range", 1, 1024 * 1024]],
        ExpiresIn=600)
    inputs = "".join(f'<input type="hidden" name="{_html_attr(k)}" value="{_html_attr(v)}">'
                     for k, v in doc["fields"].items())
    pages.pages["/upload"] = (f'<html><body><form id="f" action="{_html_attr(doc["url"])}" method="post" '
                              f'enctype="multipart/form-data">{inputs}<input type="file" name="file">'
                              f'<input type="submit" id="go" value="Upload"></form></body></html>')
    content = b"uploaded by a real browser\n" * 100
    page = browser.new_page()
    try:
        page.goto(f"{pages.origin}/upload")
        page.set_input_files("input[type=file]", files=[{"name": "note.txt", "mimeType": "text/plain",
                                                          "buffer": content}])
        with page.expect_navigation(url=lambda url: url.startswith(done)):
            page.click("#go")
        landed = urlsplit(page.url)
    finally:
        page.close()
    query = parse_qs(landed.query)
    assert query["bucket"] == [bucket] and query["key"] == ["browser/note.txt"]
    got = s3.get_object(Bucket=bucket, Key="browser/note.txt")
    assert got["Body"].read() == content
    assert got["ContentType"] == "text/plain" and got["Metadata"] == {"from": "chromium"}
    assert query["etag"] == [got["ETag"]]


def test_fetch_form_post_reads_the_answer_with_cors(server, s3, bucket, browser, pages):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": [pages.origin], "AllowedMethods": ["POST"], "ExposeHeaders": ["ETag"]}]})
    signer = server.client(signature_version="s3v4")
    doc = signer.generate_presigned_post(bucket, "fetched.txt", Fields={"success_action_status": "201"},
                                         Conditions=[{"success_action_status": "201"}], ExpiresIn=600)
    pages.pages["/page"] = "<html><body>page</body></html>"
    page = browser.new_page()
    try:
        page.goto(f"{pages.origin}/page")
        result = page.evaluate("""async ([url, fields]) => {
            const form = new FormData();
            for (const [k, v] of Object.entries(fields)) form.append(k, v);
            form.append("file", new Blob(["from fetch"], {type: "text/plain"}), "x.txt");
            const r = await fetch(url, {method: "POST", body: form});
            return {status: r.status, etag: r.headers.get("ETag"), body: await r.text()};
        }""", [doc["url"], doc["fields"]])
    finally:
        page.close()
    assert result["status"] == 201
    assert "<Key>fetched.txt</Key>" in result["body"]
    assert s3.get_object(Bucket=bucket, Key="fetched.txt")["Body"].read() == b"from fetch"
    assert result["etag"] == s3.head_object(Bucket=bucket, Key="fetched.txt")["ETag"]


FETCH_PUT = """async (url) => {
    try {
        const r = await fetch(url, {method: "PUT", body: "put by fetch", headers: {"Content-Type": "text/plain"},
                                    mode: "cors"});
        return {ok: true, status: r.status, etag: r.headers.get("ETag")};
    } catch (e) {
        return {ok: false, error: String(e)};
    }
}"""


def preflights(server, bucket: str, key: str, count: int) -> list[str]:
    """The access log's status codes of preflights for this object, once ``count`` are logged
    (the server writes an access line after the answer has gone out, so the browser may see
    the answer before the line is written; bounded wait)."""
    deadline = time.monotonic() + 15
    while True:
        found = [line.split(f"/{bucket}/{key} ", 1)[1].split(" ", 1)[0]
                 for line in server.log_text().splitlines()
                 if "buckets.access: OPTIONS " in line and f"/{bucket}/{key} " in line]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_fetch_put_with_a_presigned_url_needs_a_cors_rule(server, s3, bucket, browser, pages):
    pages.pages["/page"] = "<html><body>page</body></html>"
    # SigV4 signs only the host here (SigV2 would sign the Content-Type the browser adds).
    url = server.client(signature_version="s3v4").generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "put-by-fetch"}, ExpiresIn=600)
    assert "X-Amz-Signature=" in url
    page = browser.new_page()
    try:
        page.goto(f"{pages.origin}/page")
        refused = page.evaluate(FETCH_PUT, url)
        assert refused["ok"] is False, refused  # the preflight failed: the PUT was never sent
        assert preflights(server, bucket, "put-by-fetch", 1) == ["403"]
        assert absent(s3, bucket, "put-by-fetch")

        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
            {"AllowedOrigins": [pages.origin], "AllowedMethods": ["PUT"], "AllowedHeaders": ["content-type"],
             "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 0}]})
        allowed = page.evaluate(FETCH_PUT, url)
    finally:
        page.close()
    assert allowed["ok"] is True and allowed["status"] == 200, allowed
    assert preflights(server, bucket, "put-by-fetch", 2) == ["403", "200"]
    got = s3.get_object(Bucket=bucket, Key="put-by-fetch")
    assert got["Body"].read() == b"put by fetch"
    assert allowed["etag"] == got["ETag"]

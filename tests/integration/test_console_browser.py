"""The web console in a real browser: headless Chromium (Playwright, Debian's chromium
package) against a real server, as a person would use it.

* A wrong password shows an error; the right one opens the buckets page.
* Create a bucket, open it, make a folder, drop a 20 MiB file on the page (the progress bar
  is visible and moves through the multipart upload), navigate the prefixes by the
  breadcrumbs and the folder rows, download the file and compare its bytes, share a file
  and open the link in a fresh browser context (no cookies), delete the objects and the
  bucket, each after its confirmation dialog.
* The cluster page shows the 4 disks and runs a heal pass to its end.
* A user added on the users page, logged in, sees none of root's buckets and no root pages.

Every page is photographed into docs/console/ (shown in docs/console.md) when
``BUCKETS_CONSOLE_SCREENSHOTS=1`` or when the picture is missing; otherwise into the test's
temporary directory, so a normal run does not rewrite the committed pictures.

Skipped, with the reason, when Playwright or a runnable Chromium is missing (as
test_browser_upload.py).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from browserkit import launch_browser
from consoleclient import ConsoleClient
from s3server import ROOT_PASSWORD, ROOT_USER, ServerProcess, empty_and_delete, start_server, stop_server
from serverproc import REPO, no_new_tracebacks

SHOTS = REPO / "docs" / "console"
BIG = 20 * 1024 * 1024
WIDE = {"width": 1180, "height": 760}
NARROW = {"width": 390, "height": 780}
TIMEOUT_MS = 120_000  # this machine is shared and loaded: generous waits, no timing assertions

# A 20 MiB file made in the page (xorshift32 bytes, not compressible), dropped on the page as
# a drag-and-drop with a DataTransfer; the page keeps its SHA-256 to compare with the download.
MAKE_DROP = """([name, size, seed]) => {
    const data = new Uint8Array(size);
    const words = new Uint32Array(data.buffer);
    let x = seed >>> 0;
    for (let i = 0; i < words.length; i++) {
        x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
        words[i] = x;
    }
    window.__dropped_sha256 = crypto.subtle.digest("SHA-256", data).then(
        (d) => Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join(""));
    const transfer = new DataTransfer();
    transfer.items.add(new File([data], name, {type: "application/octet-stream"}));
    return transfer;
}"""

# Every value the upload progress bars take, as the page sets them.
WATCH_PROGRESS = """() => {
    window.__progress = [];
    new MutationObserver((changes) => {
        for (const change of changes) {
            const node = change.target;
            if (node.tagName === "PROGRESS" && (node.getAttribute("aria-label") || "").startsWith("Upload of")) {
                window.__progress.push([node.value, node.max]);
            }
        }
    }).observe(document.body, {subtree: true, attributes: true, attributeFilter: ["value"]});
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    yield from launch_browser()


@pytest.fixture(scope="module")
def srv(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("console-browser"))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(autouse=True)
def no_server_bugs(srv: ServerProcess) -> Iterator[None]:
    with no_new_tracebacks(srv.log_text):
        yield


@pytest.fixture
def shots(tmp_path: Path):
    """``shots(page, "buckets")``: a PNG of the page (see the module docstring for where)."""
    refresh = os.environ.get("BUCKETS_CONSOLE_SCREENSHOTS") == "1"

    def shoot(page, name: str, *, full_page: bool = False) -> Path:
        target = SHOTS / f"{name}.png"
        if not refresh and target.exists():
            target = tmp_path / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=full_page)
        assert target.stat().st_size > 2000 and target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        return target

    return shoot


def open_console(browser, srv: ServerProcess, viewport: dict = WIDE):
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{srv.endpoint}/console/")
    page.wait_for_selector("#access-key")
    return context, page, errors


def log_in(page, access_key: str, secret_key: str) -> None:
    page.fill("#access-key", access_key)
    page.fill("#secret-key", secret_key)
    page.press("#secret-key", "Enter")  # the keyboard submits the form


def confirm(page, *, wait: bool = True) -> None:
    """Press the open dialog's confirming button (and wait for the dialog to close)."""
    page.click("#dialog[open] button[value=ok]")
    if wait:
        page.wait_for_function("() => !document.getElementById('dialog').open")


def test_a_wrong_password_shows_an_error(browser, srv: ServerProcess, shots) -> None:
    context, page, errors = open_console(browser, srv)
    try:
        shots(page, "login")
        log_in(page, ROOT_USER, "not-the-password")
        error = page.locator("#login-error")
        error.wait_for(state="visible")
        assert "Wrong access key or secret key" in error.inner_text()
        assert page.locator("#top").is_hidden()  # not logged in: no navigation
        assert page.evaluate("document.cookie") == ""
        log_in(page, ROOT_USER, ROOT_PASSWORD)
        page.wait_for_selector("#top:not([hidden])")
        assert page.locator("#who").inner_text().startswith("Logged in as")
        assert errors == []
    finally:
        context.close()


def test_buckets_upload_navigate_download_share_delete(browser, srv: ServerProcess, shots) -> None:
    s3 = srv.client()
    name = f"photos-{uuid.uuid4().hex[:8]}"
    context, page, errors = open_console(browser, srv)
    try:
        log_in(page, ROOT_USER, ROOT_PASSWORD)
        page.wait_for_selector("#new-bucket")
        page.fill("#new-bucket", name)
        page.click("text=Create bucket")
        page.wait_for_selector(f'#bucket-table tr[data-bucket="{name}"]')
        assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
        shots(page, "buckets")

        # into the bucket, then a new folder "docs" (a prefix) through its dialog
        page.click(f'#bucket-table a:text-is("{name}")')
        page.wait_for_selector("#dropzone")
        page.click("#new-folder")
        page.fill("#folder-name", "docs")
        confirm(page)
        page.wait_for_selector('.crumbs [aria-current="page"]:text-is("docs")')
        assert page.url.endswith(f"#/browse/{name}?prefix=docs%2F")

        # drag and drop 20 MiB: multipart with progress, then the object is listed
        page.evaluate(WATCH_PROGRESS)
        transfer = page.evaluate_handle(MAKE_DROP, ["big.bin", BIG, 20261130])
        page.dispatch_event("#dropzone", "dragover", {"dataTransfer": transfer})
        page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
        bar = page.locator('progress[aria-label="Upload of docs/big.bin"]')
        bar.wait_for(state="visible")
        page.wait_for_selector('li.upload[data-key="docs/big.bin"][data-state="done"]')
        assert bar.is_visible()
        seen = page.evaluate("window.__progress")
        assert any(0 < value < maximum for value, maximum in seen), seen  # it moved, part by part
        assert bar.evaluate("(node) => node.value === node.max")
        page.wait_for_selector('#object-table tr[data-key="docs/big.bin"]')
        dropped_sha256 = page.evaluate("window.__dropped_sha256")
        head = s3.head_object(Bucket=name, Key="docs/big.bin")
        assert head["ContentLength"] == BIG and head["ETag"].endswith('-3"')  # 8 + 8 + 4 MiB parts

        # a small file through the file picker, for the share link
        page.set_input_files("#file-input", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                    "buffer": b"shared from the console\n"}])
        page.wait_for_selector('#object-table tr[data-key="docs/notes.txt"]')
        shots(page, "browser-upload")

        # up to the bucket by the breadcrumb: the folder row; into it again by the row
        page.click(f'.crumbs a:text-is("{name}")')
        page.wait_for_selector('#object-table tr[data-prefix="docs/"]')
        assert page.locator('#object-table tr[data-key]').count() == 0
        page.click('#object-table tr[data-prefix="docs/"] a')
        page.wait_for_selector('#object-table tr[data-key="docs/big.bin"]')

        # sort by size, descending: the big file first
        page.click('button[data-sort="size"]')
        page.click('button[data-sort="size"]')
        assert page.locator("#object-table tbody tr[data-key]").first.get_attribute("data-key") == "docs/big.bin"
        shots(page, "browser")

        # download: the same bytes as dropped
        with page.expect_download() as download_info:
            page.click('a[aria-label="Download big.bin"]')
        download = download_info.value
        assert download.suggested_filename == "big.bin"
        downloaded = Path(download.path()).read_bytes()
        assert len(downloaded) == BIG and hashlib.sha256(downloaded).hexdigest() == dropped_sha256
        assert hashlib.sha256(s3.get_object(Bucket=name, Key="docs/big.bin")["Body"].read()).hexdigest() \
            == dropped_sha256

        # details of the object
        page.click('#object-table a:text-is("big.bin")')
        page.wait_for_selector("#object-details")
        assert page.locator("#object-etag").inner_text() == head["ETag"].strip('"')
        details = page.locator("#object-details").inner_text()
        assert "CRC64NVME" in details and "20.0 MiB" in details and "application/octet-stream" in details
        shots(page, "object")
        page.go_back()
        page.wait_for_selector('#object-table tr[data-key="docs/notes.txt"]')

        # share: a presigned link, opened in a fresh context (no cookies, no session)
        page.click('button[aria-label="Share notes.txt"]')
        page.select_option("#share-expiry", "86400")
        confirm(page, wait=False)  # the link's own dialog follows
        url = page.locator("#share-url").input_value()
        assert url.startswith(f"{srv.endpoint}/{name}/docs/notes.txt?") and "X-Amz-Expires=86400" in url
        shots(page, "share")
        page.keyboard.press("Escape")
        fresh = browser.new_context()
        try:
            assert fresh.cookies() == []
            other = fresh.new_page()
            response = other.goto(url)
            assert response.status == 200
            assert other.inner_text("body").strip() == "shared from the console"
        finally:
            fresh.close()

        # a narrow screen: the same page stacks
        page.set_viewport_size(NARROW)
        shots(page, "narrow")
        page.set_viewport_size(WIDE)

        # delete both objects at once, then the bucket
        page.check('input[aria-label="Select big.bin"]')
        page.check('input[aria-label="Select notes.txt"]')
        assert page.locator("#delete-selected").inner_text() == "Delete selected (2)"
        page.click("#delete-selected")
        assert "Delete 2 objects?" in page.locator("#dialog").inner_text()
        confirm(page)
        page.wait_for_selector("#listing .empty")
        assert s3.list_objects_v2(Bucket=name)["KeyCount"] == 0
        page.click('nav[aria-label="Main"] a[data-nav="buckets"]')
        page.click(f'button[aria-label="Delete bucket {name}"]')
        assert "The bucket is empty" in page.locator("#dialog").inner_text()
        confirm(page)
        page.wait_for_selector(f'#bucket-table tr[data-bucket="{name}"]', state="detached")
        assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert errors == []
    finally:
        context.close()
        empty_and_delete(s3, name)


def test_the_cluster_page_shows_the_disks_and_runs_a_heal(browser, srv: ServerProcess, shots) -> None:
    s3 = srv.client()
    name = f"heal-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    for index in range(3):
        s3.put_object(Bucket=name, Key=f"k{index}", Body=os.urandom(3000))
    context, page, errors = open_console(browser, srv)
    try:
        log_in(page, ROOT_USER, ROOT_PASSWORD)
        page.wait_for_selector("#top:not([hidden])")
        page.click('nav[aria-label="Main"] a[data-nav="cluster"]')
        page.wait_for_selector("#disk-table")
        assert page.locator("#disk-table tbody tr").count() == 4
        assert page.locator("#card-disks .card-value").inner_text() == "4 / 4 online"
        assert "2 data + 2 parity" in page.locator("#card-erasure").inner_text()
        page.click("#start-heal")
        page.wait_for_selector('#heal-status[data-started="true"][data-done="true"]')
        assert "Last pass finished" in page.locator("#heal-status").inner_text()
        assert page.locator("#heal-progress").evaluate("(node) => node.value === node.max")
        page.wait_for_selector("#rate-table")  # the S3 requests above, per API
        shots(page, "cluster", full_page=True)
        assert errors == []
    finally:
        context.close()
        empty_and_delete(s3, name)


def test_a_user_without_rights_sees_no_one_elses_buckets(browser, srv: ServerProcess, shots) -> None:
    s3 = srv.client()
    roots = f"root-only-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=roots)
    user, secret = f"bob-{uuid.uuid4().hex[:6]}", "bob-secret-key-1"
    context, page, errors = open_console(browser, srv)
    try:
        log_in(page, ROOT_USER, ROOT_PASSWORD)
        page.wait_for_selector("#top:not([hidden])")
        page.click('nav[aria-label="Main"] a[data-nav="users"]')
        page.wait_for_selector("#user-access-key")
        page.wait_for_selector("#user-policy")
        page.fill("#user-access-key", user)
        page.fill("#user-secret-key", secret)
        page.select_option("#user-policy", "readwrite")
        page.click("text=Add user")
        page.wait_for_selector(f'#user-table tr[data-user="{user}"]')
        shots(page, "users")
        page.click("#logout")
        page.wait_for_selector("#access-key")

        log_in(page, user, secret)
        page.wait_for_selector("#new-bucket")
        page.wait_for_selector("#main .empty, #bucket-table")
        assert roots not in page.locator("#main").inner_text()
        assert page.locator('a[data-nav="cluster"]').is_hidden() and page.locator('a[data-nav="users"]').is_hidden()
        page.goto(f"{srv.endpoint}/console/#/browse/{roots}")
        alert = page.locator("#listing .error-box")
        alert.wait_for(state="visible")
        assert "AccessDenied" in alert.inner_text()
        page.goto(f"{srv.endpoint}/console/#/cluster")
        page.wait_for_selector("#main .error-box")
        assert "root user only" in page.locator("#main .error-box").inner_text()
        assert errors == []
    finally:
        context.close()
        root = ConsoleClient(srv.endpoint)
        root.login(ROOT_USER, ROOT_PASSWORD)
        root.call("DELETE", f"users/{user}")
        empty_and_delete(s3, roots)

"""The multipart/form-data body of a POST Object request, read as a stream.

S3's rules for the form: the fields come first and are small (at most 20 KiB before the
file, ``MaxPostPreDataLengthExceededError`` beyond); ``file`` is the last field used,
streamed to the engine and never held in memory; anything after it is ignored. Field
names are case-insensitive (kept here lower-cased) and each may appear once.

    form = PostForm(request)
    await form.read_fields()          # form.fields: {"key": "...", "policy": "...", ...}
    async for chunk in form.file_chunks(): ...
    await form.finish()               # skip what follows the file, bounded

Every malformation (no boundary, a broken part, bytes that are not UTF-8 in a field) is
``MalformedPOSTRequest``; a client that stops sending ends with RequestTimeout
(``connections.watch_body``), as any other body does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from buckets.errors import BucketsError, InvalidArgument, PreconditionFailed, define_error
from buckets.s3.body import send_continue
from buckets.s3.connections import watch_body

MAX_PRE_DATA = 20 * 1024  # S3's limit on the fields before the file
FILE_CHUNK = 64 * 1024
MAX_TRAILING = 64 * 1024  # what is read (and dropped) after the file to keep the connection

MalformedPOSTRequest = define_error("MalformedPOSTRequest", "MalformedPOSTRequest", 400,
                                    "The body of your POST request is not well-formed multipart/form-data.")
MaxPostPreDataLengthExceeded = define_error(
    "MaxPostPreDataLengthExceeded", "MaxPostPreDataLengthExceededError", 400,
    "Your POST request fields preceding the upload file were too large.")
IncorrectNumberOfFiles = define_error("IncorrectNumberOfFiles", "IncorrectNumberOfFilesInPostRequest", 400,
                                      "POST requires exactly one file upload per request.")

_PARSE_ERRORS = (ValueError, AssertionError, HttpProcessingError, RuntimeError, LookupError)


def _not_multipart() -> PreconditionFailed:
    return PreconditionFailed("At least one of the pre-conditions you specified did not hold",
                              Condition="Bucket POST must be of the enclosure-type multipart/form-data")


class PostForm:
    """One POST Object body: its fields, then its file, read once and in order."""

    def __init__(self, request: web.Request) -> None:
        content_type = request.headers.get("Content-Type", "")
        if content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
            raise _not_multipart()
        try:
            self._reader = MultipartReader(request.headers, request.content)
        except _PARSE_ERRORS:
            raise MalformedPOSTRequest() from None
        self._request = request
        self.fields: dict[str, str] = {}
        self.filename: str | None = None  # the file part's filename, "" when it names none
        self._file: BodyPartReader | None = None
        self.file_size = 0

    async def read_fields(self) -> None:
        """Read every field up to the file (``IncorrectNumberOfFilesInPostRequest`` when
        the body ends without one)."""
        await send_continue(self._request)
        async for _ in watch_body(self._request, self._fields()):
            pass
        if self._file is None:
            raise IncorrectNumberOfFiles()

    async def _fields(self) -> AsyncIterator[None]:
        used = 0
        while True:
            part = await self._next_part()
            if part is None:
                return
            name = (part.name or "").lower()
            if name == "file":
                self._file = part
                self.filename = part.filename or ""
                return
            value = bytearray()
            try:
                while True:
                    chunk = await part.read_chunk(min(FILE_CHUNK, MAX_PRE_DATA + 1))
                    if not chunk:
                        break
                    value += chunk
                    used += len(chunk)
                    if used > MAX_PRE_DATA:
                        raise MaxPostPreDataLengthExceeded()
                    yield None  # let watch_body see progress between chunks
            except _PARSE_ERRORS:
                raise MalformedPOSTRequest() from None
            used += len(name)
            if used > MAX_PRE_DATA:
                raise MaxPostPreDataLengthExceeded()
            if not name:
                continue  # a part without a name is no field (browsers never send one)
            if name in self.fields:
                raise InvalidArgument(f"POST form fields must be unique: '{name}' appears more than once.",
                                      ArgumentName=name, ArgumentValue=self.fields[name])
            try:
                self.fields[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedPOSTRequest() from None

    async def _next_part(self) -> BodyPartReader | None:
        try:
            part = await self._reader.next()
        except _PARSE_ERRORS:
            raise MalformedPOSTRequest() from None
        if part is not None and not isinstance(part, BodyPartReader):
            raise MalformedPOSTRequest()  # a nested multipart body is not a form field
        return part

    def file_chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive (the stall watch applies); ``file_size`` counts them."""
        return watch_body(self._request, self._file_chunks())

    async def _file_chunks(self) -> AsyncIterator[bytes]:
        assert self._file is not None
        part = self._file
        while True:
            try:
                chunk = await part.read_chunk(FILE_CHUNK)
            except _PARSE_ERRORS:
                raise MalformedPOSTRequest() from None
            if not chunk:
                return
            self.file_size += len(chunk)
            yield bytes(chunk)

    async def finish(self) -> None:
        """Read past what follows the file (S3 ignores it), up to a bound: beyond it the
        rest is left unread and the connection is closed after the answer."""
        try:
            async for _ in watch_body(self._request, self._trailing()):
                pass
        except (BucketsError, *_PARSE_ERRORS):
            pass  # the object is stored; a broken or stalled epilogue only costs the connection

    async def _trailing(self) -> AsyncIterator[None]:
        budget = MAX_TRAILING
        while budget > 0:
            part = await self._next_part()
            if part is None:
                return
            while budget > 0:
                chunk = await part.read_chunk(min(FILE_CHUNK, budget))
                if not chunk:
                    break
                budget -= len(chunk)
                yield None

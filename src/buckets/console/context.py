"""The console's stand-in for ``S3Request``: what the S3 layer's authorization and write
helpers read from a request, built for the logged-in user.

``buckets.s3.permissions.allowed``/``authorize`` and the helpers around them
(``owner_name``, ``buckets.s3.acls.write_access``, ``buckets.s3.body.open_stream``) need
``.auth`` (who: an ``AuthContext`` with the session's access key), ``.config`` (the root
user), ``.store``, ``.request`` (the aiohttp request: its address, TLS, ``Referer`` and
``User-Agent`` become condition keys exactly as for an S3 request) and ``.request_id``;
``.headers`` is what those helpers treat as the S3 request's headers. A console call is a
JSON API call, not an S3 request: only the headers the console itself decides on (the
content type of an upload) are there, so a header the browser happens to send (an
``x-amz-acl``, say) is never taken as an S3 instruction.

The authentication method is ``console``: a policy condition on ``s3:authType`` or
``s3:signatureversion`` (which console calls do not have, since they are not signed with
SigV4 or SigV2) does not match them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from buckets.s3.auth.credentials import UNSIGNED_PAYLOAD, AuthContext

METHOD_CONSOLE = "console"


def console_auth(access_key: str) -> AuthContext:
    """The identity of a console call: the session's user; the body is not signed."""
    return AuthContext(access_key=access_key, method=METHOD_CONSOLE, content_sha256=UNSIGNED_PAYLOAD)


@dataclass(slots=True)
class ConsoleRequest:
    request: web.Request
    store: Any
    config: Any
    auth: AuthContext
    request_id: str
    headers: CIMultiDictProxy[str] = field(default_factory=lambda: CIMultiDictProxy(CIMultiDict()))

    def with_headers(self, **values: str) -> "ConsoleRequest":
        """The same call with these S3 request headers (``content_type="text/plain"``)."""
        headers = CIMultiDict({name.replace("_", "-"): value for name, value in values.items()})
        return ConsoleRequest(self.request, self.store, self.config, self.auth, self.request_id,
                              CIMultiDictProxy(headers))

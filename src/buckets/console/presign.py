"""Share links: a presigned S3 GET URL (SigV4, query string), made on the server with the
logged-in user's own credentials.

The URL is an ordinary S3 request: whoever opens it is that user reading that object, as
with ``aws s3 presign``; the S3 pipeline verifies it (``buckets.s3.auth``) and authorizes
``s3:GetObject`` for the user when it is used, so a link stops working when it expires,
when the user loses the right to read the object, is disabled or removed, or gets a new
secret. Only the host is signed (what a browser sends unchanged), the payload is
``UNSIGNED-PAYLOAD``, and the path is path-style ``/BUCKET/KEY``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from buckets.s3.auth.canonical import AMZ_DATE_FORMAT, aws_uri_encode
from buckets.s3.auth.credentials import UNSIGNED_PAYLOAD
from buckets.s3.auth.sigv4 import ALGORITHM, MAX_PRESIGN_EXPIRES, derive_signing_key, signature_hex, string_to_sign

MIN_EXPIRES = 1


def presigned_get_url(*, endpoint: str, host: str, bucket: str, key: str, access_key: str, secret: str,
                      region: str, expires: int, now: datetime | None = None) -> str:
    """``endpoint`` is ``scheme://host[:port]`` as the link's user will type it; ``host`` the
    Host header a client sends for it (no default port)."""
    if not MIN_EXPIRES <= expires <= MAX_PRESIGN_EXPIRES:
        raise ValueError(f"a share link lasts from {MIN_EXPIRES} second to {MAX_PRESIGN_EXPIRES} seconds (7 days)")
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    amz_date = moment.strftime(AMZ_DATE_FORMAT)
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    params = {
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
    }
    query = "&".join(f"{aws_uri_encode(name, keep_slash=False)}={aws_uri_encode(value, keep_slash=False)}"
                     for name, value in sorted(params.items()))
    path = aws_uri_encode(f"/{bucket}/{key}", keep_slash=True)
    canonical = "\n".join(("GET", path, query, f"host:{host}\n", "host", UNSIGNED_PAYLOAD))
    signature = signature_hex(derive_signing_key(secret, amz_date[:8], region, "s3"),
                              string_to_sign(amz_date, scope, canonical))
    return f"{endpoint}{path}?{query}&X-Amz-Signature={signature}"

"""The web console: Buckets in a browser, served by the node itself at ``/console/``.

Pages for buckets, the object browser (prefixes, paging, uploads with progress, downloads,
share links, deletes, details), the cluster (disks, erasure layout, heal, migration,
request rates) and users. Plain HTML, CSS and ES modules shipped in the package
(``static/``): no CDN, no build step. The server side (``api``) authorizes every call as
the S3 API would for the logged-in user (``buckets.s3.permissions``); sessions are in
``sessions``. See docs/console.md.
"""

from buckets.console.api import Console

__all__ = ["Console"]

"""The object layer: buckets, objects, multipart uploads and listings over erasure-coded disks.

Owns: the PUT and GET data paths (streamed block by block), write quorum, commit order
(disks, then registry, then answer), multipart adoption, listing via the registry, the
heal queue fed by damaged reads, and registry rebuild from the disks. Talks to disks only
through the ``Disk`` protocol and never parses HTTP.
"""

from buckets.engine.types import (  # noqa: F401
    BucketInfo, CompletePart, ListResult, ObjectInfo, PartInfo, PutOptions, UploadInfo,
)

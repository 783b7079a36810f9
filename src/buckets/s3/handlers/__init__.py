"""S3 operation handlers, one module per API family.

Each handler is `async def op(req: S3Request) -> web.StreamResponse`; `OPERATIONS` maps
the AWS operation name chosen by `buckets.s3.router.select_operation` to its handler.
Handlers translate HTTP to engine calls and back; they never touch disks.
"""

from __future__ import annotations

from buckets.s3.handlers import (
    attributes,
    bucket,
    copy,
    delete_multi,
    listing,
    multipart,
    object,
    service,
)

OPERATIONS = {
    "ListBuckets": service.list_buckets,
    "CreateBucket": bucket.create_bucket,
    "HeadBucket": bucket.head_bucket,
    "DeleteBucket": bucket.delete_bucket,
    "GetBucketLocation": bucket.get_bucket_location,
    "GetBucketVersioning": bucket.get_bucket_versioning,
    "ListObjects": listing.list_objects_v1,
    "ListObjectsV2": listing.list_objects_v2,
    "ListObjectVersions": listing.list_object_versions,
    "PutObject": object.put_object,
    "GetObject": object.get_object,
    "HeadObject": object.head_object,
    "DeleteObject": object.delete_object,
    "GetObjectAttributes": attributes.get_object_attributes,
    "CopyObject": copy.copy_object,
    "UploadPartCopy": copy.upload_part_copy,
    "DeleteObjects": delete_multi.delete_objects,
    "CreateMultipartUpload": multipart.create_multipart_upload,
    "UploadPart": multipart.upload_part,
    "CompleteMultipartUpload": multipart.complete_multipart_upload,
    "AbortMultipartUpload": multipart.abort_multipart_upload,
    "ListParts": multipart.list_parts,
    "ListMultipartUploads": multipart.list_multipart_uploads,
}

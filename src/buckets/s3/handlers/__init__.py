"""S3 operation handlers, one module per API family.

Each handler is `async def op(req: S3Request) -> web.StreamResponse`; `OPERATIONS` maps
the AWS operation name chosen by `buckets.s3.router.select_operation` to its handler.
Handlers translate HTTP to engine calls and back; they never touch disks.
"""

from __future__ import annotations

from buckets.s3.handlers import (
    access,
    attributes,
    bucket,
    copy,
    cors,
    delete_multi,
    encryption,
    lifecycle,
    listing,
    multipart,
    notification,
    object,
    objectlock,
    post_object,
    service,
    tagging,
)

OPERATIONS = {
    "ListBuckets": service.list_buckets,
    "CreateBucket": bucket.create_bucket,
    "HeadBucket": bucket.head_bucket,
    "DeleteBucket": bucket.delete_bucket,
    "GetBucketLocation": bucket.get_bucket_location,
    "GetBucketVersioning": bucket.get_bucket_versioning,
    "PutBucketVersioning": bucket.put_bucket_versioning,
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
    # who may do what (buckets.iam): policies, ACLs, ownership controls, public access block
    "GetBucketPolicy": access.get_bucket_policy,
    "PutBucketPolicy": access.put_bucket_policy,
    "DeleteBucketPolicy": access.delete_bucket_policy,
    "GetBucketPolicyStatus": access.get_bucket_policy_status,
    "GetBucketAcl": access.get_bucket_acl,
    "PutBucketAcl": access.put_bucket_acl,
    "GetObjectAcl": access.get_object_acl,
    "PutObjectAcl": access.put_object_acl,
    "GetBucketOwnershipControls": access.get_ownership_controls,
    "PutBucketOwnershipControls": access.put_ownership_controls,
    "DeleteBucketOwnershipControls": access.delete_ownership_controls,
    "GetPublicAccessBlock": access.get_public_access_block,
    "PutPublicAccessBlock": access.put_public_access_block,
    "DeletePublicAccessBlock": access.delete_public_access_block,
    # browser uploads and CORS
    "PostObject": post_object.post_object,
    "PreflightRequest": cors.preflight,
    "GetBucketCors": cors.get_bucket_cors,
    "PutBucketCors": cors.put_bucket_cors,
    "DeleteBucketCors": cors.delete_bucket_cors,
    # notifications
    "GetBucketNotificationConfiguration": notification.get_bucket_notification,
    "PutBucketNotificationConfiguration": notification.put_bucket_notification,
    # encryption at rest
    "GetBucketEncryption": encryption.get_bucket_encryption,
    "PutBucketEncryption": encryption.put_bucket_encryption,
    "DeleteBucketEncryption": encryption.delete_bucket_encryption,
    # lifecycle (buckets.lifecycle)
    "GetBucketLifecycleConfiguration": lifecycle.get_bucket_lifecycle,
    "PutBucketLifecycleConfiguration": lifecycle.put_bucket_lifecycle,
    "DeleteBucketLifecycle": lifecycle.delete_bucket_lifecycle,
    # tagging
    "GetObjectTagging": tagging.get_object_tagging,
    "PutObjectTagging": tagging.put_object_tagging,
    "DeleteObjectTagging": tagging.delete_object_tagging,
    "GetBucketTagging": tagging.get_bucket_tagging,
    "PutBucketTagging": tagging.put_bucket_tagging,
    "DeleteBucketTagging": tagging.delete_bucket_tagging,
    # object lock
    "GetObjectLockConfiguration": objectlock.get_object_lock_configuration,
    "PutObjectLockConfiguration": objectlock.put_object_lock_configuration,
    "GetObjectRetention": objectlock.get_object_retention,
    "PutObjectRetention": objectlock.put_object_retention,
    "GetObjectLegalHold": objectlock.get_object_legal_hold,
    "PutObjectLegalHold": objectlock.put_object_legal_hold,
}

"""Bucket lifecycle: the configuration (``config``: S3's XML in and out, validated as AWS
validates it), rule evaluation (``rules``: which rule applies to an object and when it is
due, pure functions) and the background worker that applies the rules (``worker``)."""

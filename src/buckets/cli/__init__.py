"""Command-line entry points: ``buckets server``, its configuration, and disk arguments.

Owns turning what an operator types (flags, ``BUCKETS_*`` environment variables, a YAML
config file, MinIO-style ``/data{1...4}`` disk arguments) into one typed ``Config``, and
the server process lifecycle (banner, signals, clean shutdown). It calls down into the
engine and the S3 app; nothing below it may import from here. Importing this package must
stay cheap: heavy modules are imported only when a command runs.
"""

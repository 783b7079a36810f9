"""Command-line entry points: ``buckets server``, ``buckets-admin`` and ``buckets-client``.

Owns turning what an operator types (flags, ``BUCKETS_*`` environment variables, a YAML
config file, MinIO-style ``/data{1...4}`` disk arguments) into one typed ``Config``, and
the server process lifecycle (banner, signals, clean shutdown); and the two operator
tools, which share the alias file (``aliases``) and output conventions (``output``). It
calls down into the engine, the S3 app, obs and admin; nothing below it may import from
here. Importing this package must
stay cheap: heavy modules are imported only when a command runs.
"""

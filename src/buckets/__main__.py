"""``python -m buckets ...``: the same as the ``buckets`` console script."""

from buckets.cli.server import main

if __name__ == "__main__":
    main()

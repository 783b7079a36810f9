"""Buckets: an S3-compatible object store.

The embedded mode is the storage engine without HTTP::

    from buckets import Store
    store = await Store.open(["/d1", "/d2", "/d3", "/d4"])
"""

__version__ = "0.1.0"

__all__ = ["Store", "SyncStore", "__version__"]


def __getattr__(name: str):  # lazy: importing buckets must stay cheap for the CLIs
    if name == "Store":
        from buckets.engine.store import Store

        return Store
    if name == "SyncStore":
        from buckets.engine.sync import SyncStore

        return SyncStore
    raise AttributeError(name)

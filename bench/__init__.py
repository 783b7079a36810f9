"""Buckets benchmarks: ``python -m bench`` (or ``make bench``).

Owns measuring how fast the pieces are: the erasure codec, the engine (``Store``), the
location registry, and the whole server over HTTP. Each suite returns figures with the
target it is judged against; ``__main__`` prints one table per suite and writes JSON so
runs can be compared over time. Nothing here asserts timings: a miss is reported, never
raised. Must not change anything outside temporary directories it creates itself.
"""

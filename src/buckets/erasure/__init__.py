"""Erasure coding and bitrot protection.

Owns: cutting object blocks into k data + m parity pieces with zfec Reed-Solomon, the
framing of every piece with an xxh3 checksum, and reconstructing a block from any k good
pieces. Pure CPU work on bytes: no files, no disks, no asyncio.
"""

from buckets.erasure.codec import ErasureCodec, ShardGeometry, frame_piece, unframe_piece

__all__ = ["ErasureCodec", "ShardGeometry", "frame_piece", "unframe_piece"]

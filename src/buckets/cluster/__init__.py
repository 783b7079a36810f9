"""The cluster layer: what turns one node into many.

Owns: the topology (nodes, disks, generations and their partition tables), peer RPC
between nodes (``rpcserver``/``rpcclient`` over ``rpcauth`` and ``rpcframe``: signed with
the cluster secret, msgpack control messages, streamed bodies), membership, the replicated control plane (``buckets.cluster.control``:
topology, users, buckets, cluster settings, migration jobs, replicated by Raft through
``pysyncobj``), the replicated location registry and data migration between generations.

Must not: parse S3 (no S3 request handling, XML or SigV4 here; the only HTTP it serves
is the peer RPC prefix). The S3 and admin layers
call into the cluster layer; the engine reaches peers' disks through the ``Disk`` protocol.
"""

"""Find a non-linearizable history of the replicated index with lost messages, and print the
replicas' merges, undos and lookups of the values its explanation names (a debugging aid for
``test_index_history.py::test_random_interleavings_with_lost_messages_are_linearizable``;
not collected by pytest). Run from the repository: ``.venv/bin/python tests/unit/cluster/lossy_trace.py``
(``LOSSY_ATTEMPTS``: histories to try, default 60; a violation usually turns up within a few dozen;
``LOSSY_LOST``: the share of calls lost, default 0.35, 0 for the test without loss and its seeds 1-3;
``HISTORY_MIX``: the operations, ``engine`` or ``wide``, see test_index_history.MIXES;
``LOSSY_ENTROPY=1``: anti-entropy passes beside the clients, see test_index_history.anti_entropy).
Each event: (loop time, kind, replica, key, version, write id, applied/retracted, displaced, lock);
each call between nodes: (time sent, "call", "src->dst", key, method, arguments, answer, whether it
or its answer was lost). The failing history is pickled to /tmp/lossy_history_<seed>.pkl, and a
reads no order of its writes explains printed with every write.
"""
import asyncio, os, random, sys, re
sys.path.insert(0, "tests/unit/cluster"); sys.path.insert(0, "tests/cluster")
import buckets.cluster.index as ix
import buckets.cluster.leases as lm
ix.SETTLE_CHECKS = 0  # as conftest.py: passes every 10-50 ms copy the writes in flight, as they are meant to
LOST = float(os.environ.get("LOSSY_LOST", "0.35"))
MIX = os.environ.get("HISTORY_MIX", "engine")
if LOST:  # as the lossy test does
    ix.KEY_LOCK_SECONDS = 0.5; ix.KEY_LOCK_WAIT = 0.3; ix.HOLDER_WAIT = 0.1; lm.HOLDER_WAIT = 0.1
OPTIONS = dict(lost=LOST, lease_seconds=0.4, mix=MIX) if LOST else dict(mix=MIX)
OPTIONS["entropy"] = os.environ.get("LOSSY_ENTROPY", "") not in ("", "0")
import test_index_history as tih
from linearizability import check
EVENTS = []
loop_time = lambda: asyncio.get_running_loop().time()
orig_merge = ix.IndexReplica.merge
orig_retract = ix.IndexReplica.retract
orig_get = ix.IndexReplica.get
def who(rep):
    return getattr(rep, "_name", "?")
async def merge(self, args):
    ans = await orig_merge(self, args)
    e = args.get("entry")
    EVENTS.append((loop_time(), "merge", who(self), args["key"], tuple(args["ts"]), e["wid"] if e else None, ans.get("applied"), bool(args.get("displaced")), bool(args.get("lock"))))
    return ans
async def retract(self, args):
    ans = await orig_retract(self, args)
    EVENTS.append((loop_time(), "retract", who(self), args["key"], tuple(args["ts"]), (args.get("was") or {}).get("wid"), ans.get("retracted")))
    return ans
async def get(self, args):
    ans = await orig_get(self, args)
    e = ans.get("entry")
    EVENTS.append((loop_time(), "get", who(self), args["key"], tuple(ans["ts"]) if ans.get("ts") else None, e["wid"] if e else None))
    return ans
ix.IndexReplica.merge = merge; ix.IndexReplica.retract = retract; ix.IndexReplica.get = get
def handlers(self):
    h = orig_handlers(self); h["merge"] = lambda a: merge(self, a); h["retract"] = lambda a: retract(self, a); h["get"] = lambda a: get(self, a)
    for m in ("lock", "unlock"):
        h[m] = (lambda m, f: lambda a: _logged(self, m, f, a))(m, h[m])
    return h
async def _logged(self, method, f, args):
    ans = await f(args)
    EVENTS.append((loop_time(), method, who(self), args.get("key"), *_brief(method, args, ans)))
    return ans
orig_handlers = ix.IndexReplica.handlers
ix.IndexReplica.handlers = handlers
orig_start = tih.start_trio
async def start(tmp_path, walls=None, **o):
    net, idx, regs = await orig_start(tmp_path, walls, **o)
    for n, i in idx.items(): i.local._name = n
    return net, idx, regs
tih.start_trio = start


def _brief(method, args, ans):
    """A call's arguments and answer, in one short line."""
    a = {k: args[k] for k in ("ts", "id", "lock", "judged", "displaced", "committing") if k in args}
    if isinstance(args.get("entry"), dict):
        a["wid"] = args["entry"].get("wid")
    if isinstance(ans, dict):
        r = {k: ans[k] for k in ("applied", "ts", "unseen", "unsettled", "cond", "judged", "had", "locked",
                                 "retracted", "undoable") if k in ans}
        if isinstance(ans.get("entry"), dict):
            r["wid"] = ans["entry"].get("wid")
    else:
        r = ans
    return a, r


def lossy(net, rng, p):
    """``test_index_history.lossy``, with every call between nodes recorded (and whether it was
    lost on the way or its answer was)."""
    real = net.transport_for

    def transport_for(src):
        call = real(src)

        async def unreliable(node, method, args):
            roll = rng.random()
            key = args.get("key") or "-"
            if roll < p / 2:
                EVENTS.append((loop_time(), "call", f"{src}->{node}", key, method, *_brief(method, args, None), "LOST-ON-WAY"))
                raise tih.errors.ServiceUnavailable(f"{node}: lost on the way")
            t0 = loop_time()
            try:
                ans = await call(node, method, args)
            except Exception as exc:
                EVENTS.append((t0, "call", f"{src}->{node}", key, method, *_brief(method, args, None), f"raised {type(exc).__name__}"))
                raise
            if roll < p:
                EVENTS.append((t0, "call", f"{src}->{node}", key, method, *_brief(method, args, ans), "ANSWER-LOST"))
                raise tih.errors.ServiceUnavailable(f"{node}: answer lost")
            EVENTS.append((t0, "call", f"{src}->{node}", key, method, *_brief(method, args, ans), "ok"))
            return ans
        return unreliable

    net.transport_for = transport_for


tih.lossy = lossy
import tempfile, pathlib
def minimal_core(ops):
    """Drop reads one by one while the rest still fails: what is left is every write and the
    reads that no order of those writes explains. (Only reads: dropping a write, or a write
    whose outcome is unknown, removes a way to explain the reads and can make a history fail
    that did not.)"""
    from linearizability import GET, check_key

    key = ops[0].key
    i = 0
    while i < len(ops):
        trial = ops[:i] + ops[i + 1:]
        if ops[i].kind == GET and check_key(key, trial).ok is False:
            ops = trial
        else:
            i += 1
    return sorted(ops, key=lambda o: o.call)


async def main():
    for attempt in range(int(os.environ.get("LOSSY_ATTEMPTS", "60"))):
        EVENTS.clear()
        seed = random.randrange(1 << 20) if LOST else 1 + attempt % 3
        if os.environ.get("LOSSY_SEED"):
            seed = int(os.environ["LOSSY_SEED"])
        with tempfile.TemporaryDirectory() as d:
            history, idx = await tih.run_history(pathlib.Path(d), seed, **OPTIONS)
        r = check(history)
        if not r.ok:
            print("seed", seed, "attempt", attempt)
            import pickle
            with open(f"/tmp/lossy_history_{seed}.pkl", "wb") as f:
                pickle.dump(history, f)
            bad = re.search(r"key '([^']+)': not linearizable", r.report())
            if bad:
                print("-- the writes, and the reads they do not explain:")
                for op in minimal_core([o for o in history if o.key == bad.group(1)]):
                    print("   ", op)
            print(r.report())
            vals = set(re.findall(r"'(k\d:\d:\d+)'", r.report()))
            for ev in EVENTS:
                if any(v in map(str, ev) for v in vals):
                    print(ev)
            # Every event of the failing key (tombstones too: their write id is None) in the
            # last 150 ms before the latest time the explanation names.
            key = re.search(r"key '([^']+)': not linearizable", r.report())
            times = [float(t) for t in re.findall(r"(\d+\.\d+)[\],]", r.report())]
            if key and times:
                print(f"-- every event of {key.group(1)} from {max(times) - 0.15:.6f} to {max(times):.6f}")
                for ev in EVENTS:
                    if ev[3] == key.group(1) and max(times) - float(os.environ.get("LOSSY_WINDOW", "0.15")) <= ev[0] <= max(times) + 0.005:
                        print(ev)
            return
    print("no violation")
asyncio.run(main())

"""The cluster suite's linearizability checker (tests/cluster/linearizability.py) on histories
whose verdict is known: tiny hand-written ones, random small ones against a brute force over
every order, and larger ones generated from a real atomic register (linearizable by
construction) with a stale read planted (not linearizable by construction)."""

from __future__ import annotations

import itertools
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cluster"))
from linearizability import CAS, DELETE, GET, PUT, Op, check, check_key, reduce  # noqa: E402


def op(client, kind, value, call, ret, key="k"):
    return Op(client, key, kind, value, call, ret)


def verdict(ops):
    return check(ops).ok


# -- tiny histories ----------------------------------------------------------------------------

def test_sequential_put_get_delete() -> None:
    assert verdict([op(0, GET, None, 0, 1), op(0, PUT, "a", 2, 3), op(1, GET, "a", 4, 5),
                    op(1, DELETE, None, 6, 7), op(0, GET, None, 8, 9)])


def test_stale_read_after_acknowledged_write() -> None:
    h = [op(0, PUT, "a", 0, 1), op(0, PUT, "b", 2, 3), op(1, GET, "a", 4, 5)]
    result = check(h)
    assert not result.ok
    assert "get() -> 'a'" in result.keys["k"].explanation


def test_read_concurrent_with_a_write_may_see_either() -> None:
    for seen in ("a", "b"):
        assert verdict([op(0, PUT, "a", 0, 1), op(0, PUT, "b", 2, 6), op(1, GET, seen, 3, 4)])


def test_new_then_old_inversion() -> None:
    # Both reads overlap the write, but the second starts after the first returned the new value.
    h = [op(0, PUT, "a", 0, 1), op(0, PUT, "b", 2, 10), op(1, GET, "b", 3, 4), op(2, GET, "a", 5, 6)]
    assert not verdict(h)


def test_value_never_written() -> None:
    assert not verdict([op(0, PUT, "a", 0, 1), op(1, GET, "zz", 2, 3)])


def test_absent_after_acknowledged_put_without_a_delete() -> None:
    assert not verdict([op(0, PUT, "a", 0, 1), op(1, GET, None, 2, 3)])


def test_unknown_put_may_show_up_late() -> None:
    # The PUT timed out; its value appears long after, and stays.
    h = [op(0, PUT, "a", 0, 1), op(0, PUT, "b", 2, None), op(1, GET, "a", 10, 11), op(1, GET, "b", 20, 21),
         op(2, GET, "b", 30, 31)]
    assert verdict(h)


def test_unknown_put_cannot_vanish_once_seen() -> None:
    h = [op(0, PUT, "a", 0, 1), op(0, PUT, "b", 2, None), op(1, GET, "b", 10, 11), op(1, GET, "a", 20, 21)]
    assert not verdict(h)


def test_unknown_put_cannot_take_effect_before_it_was_sent() -> None:
    h = [op(0, PUT, "a", 0, 1), op(1, GET, "b", 2, 3), op(0, PUT, "b", 4, None)]
    assert not verdict(h)


def test_unknown_delete_explains_a_later_absent() -> None:
    h = [op(0, PUT, "a", 0, 1), op(0, DELETE, None, 2, None), op(1, GET, "a", 5, 6), op(1, GET, None, 7, 8)]
    assert verdict(h)
    assert not verdict(h[:1] + h[2:])  # without the delete, "absent" after "a" is impossible


def test_unknown_reads_are_dropped_and_unobserved_unknown_puts_too() -> None:
    h = [op(0, PUT, "a", 0, 1), op(1, GET, "zz", 2, None), op(0, PUT, "b", 3, None), op(2, PUT, "c", 3, None),
         op(1, GET, "c", 9, 10)]
    kept = reduce(h)
    assert [o.value for o in kept] == ["a", "c", "c"]
    result = check_key("k", h)
    assert result.ok and result.checked == 3 and result.dropped == 2


def test_keys_are_independent_registers() -> None:
    h = [op(0, PUT, "a", 0, 1, key="x"), op(0, PUT, "b", 0, 1, key="y"), op(1, GET, "a", 2, 3, key="x"),
         op(1, GET, "a", 2, 3, key="y")]
    result = check(h)
    assert result.keys["x"].ok and not result.keys["y"].ok
    assert result.checked == 4
    assert "NOT linearizable" in result.report() and "'y'" in result.report()


def test_touching_operations_overlap() -> None:
    # The read is called at the very instant the write returns: concurrent, either answer is fine.
    assert verdict([op(0, PUT, "a", 0, 5), op(1, GET, None, 5, 6)])


def test_conditional_puts() -> None:
    # A chain of conditional PUTs, each from the value the last one wrote: linearizable.
    assert verdict([op(0, PUT, "a", 0, 1), op(1, CAS, ("a", "b"), 2, 3), op(2, CAS, ("b", "c"), 4, 5),
                    op(0, GET, "c", 6, 7), op(1, CAS, (None, "x"), 8, 9, key="k2")])
    # Two writers both won from the same value, one after the other: one of them is wrong.
    assert not verdict([op(0, PUT, "a", 0, 1), op(1, CAS, ("a", "b"), 2, 3), op(2, CAS, ("a", "c"), 4, 5)])
    # Concurrent, both from "a": still only one can win.
    assert not verdict([op(0, PUT, "a", 0, 1), op(1, CAS, ("a", "b"), 2, 6), op(2, CAS, ("a", "c"), 3, 7)])
    # If-None-Match: * while the key holds a value.
    assert not verdict([op(0, PUT, "a", 0, 1), op(1, CAS, (None, "b"), 2, 3)])


def test_a_write_acknowledged_inside_a_conditional_puts_window_and_then_lost() -> None:
    """The lost update conditional writes exist to prevent: an unconditional PUT acknowledged
    while a conditional one (judged on the value before it) was in flight, then the
    conditional one's value read back: no order explains it."""
    h = [op(0, PUT, "a", 0, 1), op(1, CAS, ("a", "c"), 2, 10), op(2, PUT, "u", 3, 4), op(0, GET, "c", 11, 12)]
    result = check(h)
    assert not result.ok
    # ... whereas the same with the unconditional PUT read back last is fine (it came after).
    assert verdict([op(0, PUT, "a", 0, 1), op(1, CAS, ("a", "c"), 2, 10), op(2, PUT, "u", 3, 4),
                    op(0, GET, "u", 11, 12)])


def test_unknown_conditional_puts() -> None:
    # Unknown and never observed: dropped (it may have taken no effect).
    ops = [op(0, PUT, "a", 0, 1), op(1, CAS, ("zz", "b"), 2, None), op(0, GET, "a", 3, 4)]
    assert len(reduce(ops)) == 2 and verdict(ops)
    # Unknown but observed: it took effect, so its condition must have held.
    assert verdict([op(0, PUT, "a", 0, 1), op(1, CAS, ("a", "b"), 2, None), op(0, GET, "b", 3, 4)])
    assert not verdict([op(0, PUT, "a", 0, 1), op(1, CAS, ("zz", "b"), 2, None), op(0, GET, "b", 3, 4)])


def test_budget_gives_up_instead_of_hanging() -> None:
    h = [op(c, PUT, f"v{c}", 0, None) for c in range(12)] + [op(99, GET, f"v{c}", 1 + c, 1.5 + c) for c in range(12)]
    result = check(h, max_steps=50)
    assert result.keys["k"].ok is None and "gave up" in result.keys["k"].explanation
    assert not result.ok


# -- random small histories against a brute force ----------------------------------------------

def brute_force(ops: list[Op]) -> bool:
    """Every subset of the unknown-outcome ops, every order respecting real time."""
    known = [o for o in ops if o.ret is not None]
    unknown = [o for o in ops if o.ret is None and o.kind != GET]
    for r in range(len(unknown) + 1):
        for chosen in itertools.combinations(unknown, r):
            members = known + list(chosen)
            for order in itertools.permutations(members):
                if not all(not (b.ret is not None and b.ret < a.call)
                           for x, a in enumerate(order) for b in order[x + 1:]):
                    continue  # b returned before a was called, yet a is placed first
                state, good = None, True
                for o in order:
                    if o.kind == PUT:
                        state = o.value
                    elif o.kind == DELETE:
                        state = None
                    elif o.kind == CAS:
                        if o.value[0] != state:
                            good = False
                            break
                        state = o.value[1]
                    elif o.value != state:
                        good = False
                        break
                if good:
                    return True
    return False


PLAIN = ([PUT, PUT, GET, GET, DELETE], 0.2)
# With conditional PUTs and DELETEs (``If-Match``), some of them of unknown outcome.
CONDITIONAL = ([PUT, PUT, GET, GET, DELETE, CAS, CAS], 0.3)


def random_small_history(rng: random.Random, kinds: list[str], unknown: float) -> list[Op]:
    ops, values = [], 0
    for c in range(rng.randint(2, 6)):
        call = rng.randint(0, 12)
        ret = None if rng.random() < unknown else call + rng.randint(0, 6)
        kind = rng.choice(kinds)
        if kind in (PUT, CAS):
            values += 1
        if kind == PUT:
            value = f"v{values}"
        elif kind == GET:
            value = rng.choice([None, "v1", "v2", "v3"])
        elif kind == CAS:
            value = (rng.choice([None, "v1", "v2"]), rng.choice([f"v{values}", None]))
        else:
            value = None
        ops.append(Op(c, "k", kind, value, call, ret))
    return ops


@pytest.mark.parametrize("mix, seed", [(PLAIN, 20240611), (CONDITIONAL, 20261203)], ids=["plain", "conditional"])
def test_agrees_with_brute_force_on_random_small_histories(mix, seed) -> None:
    rng = random.Random(seed)
    outcomes = {True: 0, False: 0}
    for _ in range(1500):
        h = random_small_history(rng, *mix)
        expected = brute_force(h)
        assert check(h).ok == expected, "\n".join(o.describe() for o in h)
        outcomes[expected] += 1
    assert outcomes[True] > 200 and outcomes[False] > 200  # both verdicts were exercised


def test_unknown_conditional_delete_may_have_taken_no_effect() -> None:
    # An If-Match DELETE of "a" with an unknown outcome, sent once "b" had replaced "a": it
    # took no effect (an "absent" read before keeps it in the search; placed anywhere after its
    # call, its condition fails: the checker used to call this history not linearizable).
    assert verdict([op(2, GET, None, -1, -0.5), op(0, PUT, "a", 0, 1), op(0, PUT, "b", 2, 3),
                    op(1, CAS, ("a", None), 4, None), op(0, GET, "b", 5, 6)])
    # ... and one that did: "absent" after "a" with no other write.
    assert verdict([op(0, PUT, "a", 0, 1), op(1, CAS, ("a", None), 2, None), op(0, GET, "a", 3, 4),
                    op(0, GET, None, 5, 6)])
    # Its condition still binds: from "b", it cannot have deleted "a".
    assert not verdict([op(0, PUT, "a", 0, 1), op(1, CAS, ("b", None), 2, None), op(0, GET, None, 3, 4)])


# -- larger generated histories -------------------------------------------------------------------

def atomic_register_history(rng: random.Random, clients: int, per_client: int, keys: int) -> list[Op]:
    """Clients issue operations back to back; each takes effect at one random instant inside its
    interval on a real register (or, if its outcome is 'unknown', maybe never)."""
    pending = []
    counter = 0
    for c in range(clients):
        t = rng.uniform(0, 3)
        for _ in range(per_client):
            call = t
            ret = call + rng.uniform(0.1, 4.0)
            at = rng.uniform(call, ret)
            key = f"k{rng.randrange(keys)}"
            kind = rng.choices([PUT, GET, DELETE], [4, 5, 1])[0]
            counter += 1
            unknown = rng.random() < 0.05
            pending.append([at, c, key, kind, f"v{counter}" if kind == PUT else None, call, ret, unknown])
            t = ret + rng.uniform(0, 0.5)
    state: dict[str, str | None] = {}
    ops = []
    for at, c, key, kind, value, call, ret, unknown in sorted(pending):
        applies = not unknown or rng.random() < 0.5
        if kind == PUT and applies:
            state[key] = value
        elif kind == DELETE and applies:
            state[key] = None
        elif kind == GET:
            value = state.get(key)
        ops.append(Op(c, key, kind, value, call, None if unknown else ret))
    return ops


@pytest.mark.parametrize("seed", range(6))
def test_generated_linearizable_histories_pass(seed) -> None:
    rng = random.Random(seed)
    h = atomic_register_history(rng, clients=6, per_client=60, keys=3)
    result = check(h)
    assert result.ok, result.report()
    assert result.checked + result.dropped == len(h) == 360


@pytest.mark.parametrize("seed", range(6))
def test_generated_history_with_a_planted_stale_read_fails(seed) -> None:
    rng = random.Random(100 + seed)
    h = atomic_register_history(rng, clients=6, per_client=60, keys=3)
    # A PUT A that was acknowledged and then overwritten by an acknowledged PUT or DELETE B
    # called after A returned: a GET called after B returned can never see A's value.
    done = [o for o in h if o.ret is not None and o.kind in (PUT, DELETE)]
    a, b = next((a, b) for a in done for b in done if a.kind == PUT and a.key == b.key and b.call > a.ret)
    end = max(o.ret for o in h if o.ret is not None)
    bad = h + [Op(99, a.key, GET, a.value, max(end, b.ret) + 1, max(end, b.ret) + 2)]
    result = check(bad)
    assert not result.ok
    assert result.keys[a.key].ok is False
    assert all(r.ok for k, r in result.keys.items() if k != a.key)

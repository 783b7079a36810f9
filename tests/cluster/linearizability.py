"""A linearizability checker for per-key registers (PUT / GET / DELETE of S3 objects).

The model is Porcupine's (Athalye, "Porcupine: a fast linearizability checker in Go"),
which is Lowe's refinement of the Wing & Gong search ("Testing for linearizability", 2017),
written in Python:

* A history is a list of operations, each with its invocation (``call``) and response
  (``ret``) times, taken by the client around the request. It is linearizable if every
  operation can be given a point between its call and its return such that, in the order
  of those points, every GET returns what a single register would hold: the value of the
  last PUT before it, or "absent" after a DELETE (or before any write).
* S3 objects are independent registers, so the history is split per key and each key is
  checked alone (linearizability is compositional: Herlihy & Wing 1990, section 3.3).
* The search: walk the call/return events in time order; at a call, try to linearize that
  operation now (the model must accept it: a GET must return the current value); at a
  return of an operation not yet linearized, the current attempt is impossible, so undo
  the most recent choice and try the next candidate. A cache of (set of linearized
  operations, register value) pairs already explored prunes the search (two paths that
  linearized the same operations into the same state have the same future).

Operations whose outcome is unknown (the client saw a 503, a timeout or a cut connection:
the request may or may not have taken effect, then or at any later time) are handled as
Knossos' "info" and Porcupine's timed-out operations: their return time is infinite, so the
search may place them anywhere after their call, including after everything else (which
is "never took effect"). Two exact reductions keep the search small:

* an unknown GET has no effect on the register and no result to check: dropped;
* an unknown PUT whose value no GET ever returned is dropped too. Values are unique per
  PUT, so no GET can sit between it and the next write in any linearization; removing it
  changes no GET's expected value, and a linearization without it extends to one with it
  (put it last). Unknown DELETEs are kept (their "absent" is indistinguishable from
  another's). An unknown conditional PUT nobody observed is dropped by the same argument
  (taking no effect is always one of its outcomes); one whose value was observed took effect,
  so its condition must hold where it is placed.

An unknown conditional write that is kept is linearized either way, taking effect where its
condition holds or taking none (``outcomes``; the search backtracks over both): placed last,
an unknown PUT or DELETE is as good as never applied, but a conditional one is not legal
where its condition fails, and a conditional DELETE (``CAS`` to ``None``) is never dropped,
since any GET that returned "absent" observes its value.

Failed operations that certainly did not take effect (refused before the request was sent)
should not be passed in at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

PUT, GET, DELETE = "put", "get", "delete"
# A conditional PUT that succeeded (``If-Match: <the ETag of a value read>``, or
# ``If-None-Match: *`` for "absent"): ``value`` is ``(expected, new)``; legal only where the
# register holds ``expected``. One refused (412, 409) took no effect and is not recorded.
CAS = "cas"
_INF = float("inf")
_CALL, _RETURN = 0, 1


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation on one key.

    ``value``: for a PUT, the value written (unique per PUT); for a GET, the value read
    (``None``: the key was absent); unused for a DELETE. ``ret`` is ``None`` when the
    outcome is unknown.
    """

    client: int
    key: str
    kind: str
    value: Hashable | None
    call: float
    ret: float | None

    def __post_init__(self) -> None:
        if self.kind not in (PUT, GET, DELETE, CAS):
            raise ValueError(f"unknown operation kind {self.kind!r}")
        if self.ret is not None and self.ret < self.call:
            raise ValueError(f"{self}: returns before it is called")

    def describe(self) -> str:
        if self.kind == CAS:
            expected, new = self.value  # type: ignore[misc]
            what = f"{'delete()' if new is None else f'put({new!r})'} if {'absent' if expected is None else repr(expected)}"
        else:
            what = {PUT: f"put({self.value!r})", DELETE: "delete()",
                    GET: f"get() -> {'absent' if self.value is None else repr(self.value)}"}[self.kind]
        end = "?" if self.ret is None else f"{self.ret:.6f}"
        return f"client {self.client}: {what} [{self.call:.6f}, {end}]"


def step(state: Hashable | None, op: Op) -> tuple[bool, Hashable | None]:
    """The register: (is ``op`` legal in ``state``, the state after it)."""
    if op.kind == PUT:
        return True, op.value
    if op.kind == DELETE:
        return True, None
    if op.kind == CAS:
        expected, new = op.value  # type: ignore[misc]
        return expected == state, new
    return op.value == state, state


def outcomes(state: Hashable | None, op: Op) -> list[Hashable | None]:
    """The states ``op`` may leave behind in ``state`` (none: not legal there). A conditional
    write whose outcome is unknown may also have taken no effect: placed last, an unknown PUT
    or DELETE is as good as never applied, but an unknown conditional one is not legal where
    its condition fails (a conditional DELETE's "absent" is observed whenever any GET returned
    absent, so ``reduce`` keeps it)."""
    legal, after = step(state, op)
    if op.kind == CAS and op.ret is None:
        return ([after] if legal else []) + ([state] if not legal or after != state else [])
    return [after] if legal else []


@dataclass
class KeyResult:
    key: str
    ok: bool | None  # None: the search gave up (step budget spent)
    checked: int  # operations the search ran over
    dropped: int  # unknown GETs and unobserved unknown PUTs (no effect on the verdict)
    explanation: str = ""


@dataclass
class CheckResult:
    keys: dict[str, KeyResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok is True for r in self.keys.values())

    @property
    def checked(self) -> int:
        return sum(r.checked for r in self.keys.values())

    @property
    def dropped(self) -> int:
        return sum(r.dropped for r in self.keys.values())

    def report(self) -> str:
        lines = [f"linearizability: {self.checked} operations checked on {len(self.keys)} keys "
                 f"({self.dropped} unknown-outcome operations without effect dropped): "
                 f"{'linearizable' if self.ok else 'NOT linearizable'}"]
        for r in self.keys.values():
            if r.ok is not True:
                lines.append(f"key {r.key!r}: {'not linearizable' if r.ok is False else 'undecided'}: "
                             f"{r.explanation}")
        return "\n".join(lines)


def check(history: Iterable[Op], *, initial: Hashable | None = None, max_steps: int = 2_000_000) -> CheckResult:
    """Check a whole history, key by key."""
    per_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        per_key[op.key].append(op)
    result = CheckResult()
    for key in sorted(per_key):
        result.keys[key] = check_key(key, per_key[key], initial=initial, max_steps=max_steps)
    return result


def reduce(ops: list[Op]) -> list[Op]:
    """The exact reductions above: drop unknown GETs and unknown PUTs (conditional ones too)
    nobody observed (no GET returned the value, no conditional PUT expected it)."""
    observed = {op.value for op in ops if op.kind == GET and op.ret is not None}
    observed |= {op.value[0] for op in ops if op.kind == CAS}  # type: ignore[index]

    def written(op: Op) -> Hashable | None:
        return op.value[1] if op.kind == CAS else op.value  # type: ignore[index]

    return [op for op in ops
            if not (op.ret is None and (op.kind == GET or (op.kind in (PUT, CAS) and written(op) not in observed)))]


def check_key(key: str, ops: list[Op], *, initial: Hashable | None = None,
              max_steps: int = 2_000_000) -> KeyResult:
    kept = reduce(ops)
    ok, explanation = _search(kept, initial, max_steps)
    return KeyResult(key, ok, len(kept), len(ops) - len(kept), explanation)


def _search(ops: list[Op], initial: Hashable | None, max_steps: int) -> tuple[bool | None, str]:
    n = len(ops)
    if n == 0:
        return True, ""
    # Events in time order; at equal times calls come first (touching operations overlap).
    events = sorted([(op.call, _CALL, i) for i, op in enumerate(ops)]
                    + [(op.ret if op.ret is not None else _INF, _RETURN, i) for i, op in enumerate(ops)])
    m = len(events)
    # A doubly linked list over positions 1..m, with 0 as the head sentinel and -1 as the end.
    nxt = list(range(1, m + 1)) + [-1]
    prv = [-1] + list(range(0, m))
    kind = [0] * (m + 1)
    opi = [0] * (m + 1)
    cpos = [0] * n
    rpos = [0] * n
    for pos, (_, k, i) in enumerate(events, start=1):
        kind[pos], opi[pos] = k, i
        if k == _CALL:
            cpos[i] = pos
        else:
            rpos[i] = pos

    def lift(i: int) -> None:  # take op i's call and return out of the list
        for p in (cpos[i], rpos[i]):
            nxt[prv[p]] = nxt[p]
            if nxt[p] != -1:
                prv[nxt[p]] = prv[p]

    def unlift(i: int) -> None:  # put them back (reverse order: dancing links)
        for p in (rpos[i], cpos[i]):
            nxt[prv[p]] = p
            if nxt[p] != -1:
                prv[nxt[p]] = p

    state: Any = initial
    linearized = 0
    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any, int]] = []  # (op, the state before it, which of its outcomes)

    def place(i: int, first: int) -> bool:
        """Linearize op i now with its first outcome from ``first`` on not explored yet."""
        nonlocal state, linearized
        new_lin = linearized | (1 << i)
        for tried, new_state in enumerate(outcomes(state, ops[i])):
            if tried >= first and (new_lin, new_state) not in cache:
                cache.add((new_lin, new_state))
                stack.append((i, state, tried))
                state, linearized = new_state, new_lin
                lift(i)
                return True
        return False
    best: tuple[int, list[int], int, Any] = (-1, [], -1, None)  # depth, order, blocking op, state
    e = nxt[0]
    steps = 0
    while nxt[0] != -1:
        steps += 1
        if steps > max_steps:
            return None, f"gave up after {max_steps} search steps over {n} operations"
        i = opi[e]
        if kind[e] == _CALL:
            if place(i, 0):
                e = nxt[0]
                continue
            e = nxt[e]
        else:
            # Op i returned and is not linearized yet: no order of the choices so far works.
            if len(stack) > best[0]:
                best = (len(stack), [j for j, _, _ in stack], i, state)
            if not stack:
                return False, _explain(ops, best)
            j, state, tried = stack.pop()
            linearized &= ~(1 << j)
            unlift(j)
            if place(j, tried + 1):  # the same op here with its next outcome
                e = nxt[0]
                continue
            e = nxt[cpos[j]]
    return True, ""


def _explain(ops: list[Op], best: tuple[int, list[int], int, Any]) -> str:
    depth, order, blocking, state = best
    tail = order[-6:]
    lines = [f"{len(ops)} operations; the longest linearizable prefix has {depth}, ending with:"]
    lines += [f"    {ops[j].describe()}" for j in tail]
    lines.append(f"  after which the register holds {'absent' if state is None else repr(state)}, and this "
                 f"operation cannot take effect before it returns:")
    lines.append(f"    {ops[blocking].describe()}")
    b = ops[blocking]
    end = lambda op: _INF if op.ret is None else op.ret  # noqa: E731
    concurrent = [op for op in ops if op is not b and op.call <= end(b) and end(op) >= b.call]
    if concurrent:
        lines.append("  operations overlapping it:")
        lines += [f"    {op.describe()}" for op in sorted(concurrent, key=lambda o: o.call)[:12]]
    return "\n".join(lines)

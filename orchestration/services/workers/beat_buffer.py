"""Coalesced heartbeats, the Redis side: a running attempt's beats answered from a hash in
the broker's Redis and written to PostgreSQL later, several at once (``beats``).

One hash per open attempt, keyed by its token's digest (what the callback authenticates):

- ``w``, ``i``: the worker and its item; ``it``, ``in``, ``out``, ``c``: its totals so far
  (iteration, tokens, reported cost: each only rises, as the worker row's), the base of the
  rise check (MAX_TOKENS_PER_HEARTBEAT) and of "progressed?";
- ``m``: the last model reported; ``at``, ``pat``: when the last beat and the last beat that
  progressed arrived (Redis's clock, ms); ``seq``, ``fseq``: beats buffered and written;
  ``o``: which opening of the fast path this is (a write acknowledged for an earlier opening
  leaves this one's count alone).

The hash exists only while the fast path is open: a slow heartbeat opens it under the item's
row lock (``beat_open``); every ending takes it (``beat_take(close=True)``) under the same
lock before it ends the attempt, so a beat after an ending finds no hash, takes the slow path,
waits for the lock and gets 409, as before. A digest in the dirty set has beats not yet
written. Every operation is one round trip (a Lua script runs atomically).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection

from orchestration.errors import ValidationFailed
from orchestration.nudge import redis_client

logger = logging.getLogger(__name__)

_BUFFER = """
local h = redis.call('HMGET', KEYS[1], 'w', 'it', 'in', 'out', 'c')
if h[1] ~= ARGV[1] then return {0} end
local names, fields = {'tokensIn', 'tokensOut'}, {'in', 'out'}
for n = 1, 2 do
  local v = ARGV[2 + n]
  if v ~= '' and tonumber(v) - tonumber(h[2 + n]) > tonumber(ARGV[7]) then
    return {-1, names[n], tonumber(v) - tonumber(h[2 + n])}
  end
end
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
local set = {'at', now}
local rose = tonumber(ARGV[2]) > tonumber(h[2])
if rose then table.insert(set, 'it'); table.insert(set, ARGV[2]) end
for n = 1, 2 do
  local v = ARGV[2 + n]
  if v ~= '' and tonumber(v) > tonumber(h[2 + n]) then
    table.insert(set, fields[n]); table.insert(set, v)
    rose = true
  end
end
if ARGV[5] ~= '' and tonumber(ARGV[5]) > tonumber(h[5] or '0') then
  table.insert(set, 'c'); table.insert(set, ARGV[5])
  rose = true
end
if ARGV[6] ~= '' then table.insert(set, 'm'); table.insert(set, ARGV[6]) end
if rose then table.insert(set, 'pat'); table.insert(set, now) end
redis.call('HSET', KEYS[1], unpack(set))
redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('SADD', KEYS[2], ARGV[9])
return {1}
"""

_TAKE = """
local h = redis.call('HMGET', KEYS[1], 'w', 'it', 'in', 'out', 'c', 'm', 'at', 'pat', 'seq',
                     'fseq', 'o')
local t = redis.call('TIME')
if ARGV[1] == '1' or not h[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
end
h[12] = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
return h
"""

_ACK = """
local seq, opened = unpack(redis.call('HMGET', KEYS[1], 'seq', 'o'))
if not seq then
  redis.call('SREM', KEYS[2], ARGV[2])
  return 0
end
if opened ~= ARGV[3] then return 0 end  -- opened again since: its own count
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'fseq')) then
  redis.call('HSET', KEYS[1], 'fseq', ARGV[1])
end
if tonumber(seq) <= tonumber(ARGV[1]) then redis.call('SREM', KEYS[2], ARGV[2]) end
return 1
"""


@dataclasses.dataclass(frozen=True)
class Pending:
    """Beats buffered since the last write: the attempt's totals as they stand, and how long
    ago (seconds, Redis's clock) its last beat, and its last beat that progressed, came."""

    iteration: int
    tokens_in: int
    tokens_out: int
    cost_usd: Decimal | None
    model: str | None
    age: float
    progress_age: float | None
    seq: int
    opened: str  # which opening of the fast path the count ``seq`` belongs to


def coalescing() -> bool:
    """Whether heartbeats are coalesced (HEARTBEAT_COALESCE, and a Redis broker)."""
    return settings.HEARTBEAT_COALESCE and redis_client() is not None


def beat_buffer(
    *,
    digest: str,
    worker_id: str,
    iteration: int,
    tokens_in: int | None,
    tokens_out: int | None,
    cost_usd: Decimal | None,
    model: str | None,
) -> bool:
    """Buffer a beat of an open attempt: True. False when the fast path is not open for this
    token and worker (or Redis fails): the caller takes the slow path. A token count risen
    by more than MAX_TOKENS_PER_HEARTBEAT since the last beat raises ValidationFailed, as the
    slow path does, and changes nothing."""
    args = [
        worker_id,
        iteration,
        "" if tokens_in is None else tokens_in,
        "" if tokens_out is None else tokens_out,
        "" if cost_usd is None else str(cost_usd),
        model or "",
        settings.MAX_TOKENS_PER_HEARTBEAT,
        _ttl(),
        digest,
    ]
    try:
        answer = _script("buffer", _BUFFER)(keys=[_key(digest), _dirty()], args=args)
    except Exception as exc:  # the buffer is an optimisation: the slow path still works
        _unavailable(exc, "; writing directly")
        return False
    if answer[0] == -1:
        key, rise, cap = answer[1].decode(), answer[2], settings.MAX_TOKENS_PER_HEARTBEAT
        raise ValidationFailed(
            "Invalid request",
            details={
                key: f"{key} rose by {rise} since the last report; at most {cap} per report "
                "(MAX_TOKENS_PER_HEARTBEAT)"
            },
        )
    return bool(answer[0])


def beat_open(
    *, digest: str, worker_id: str, work_item_id: str, totals: tuple[int, int, int]
) -> None:
    """Open the fast path for an active attempt whose totals (iteration, tokens in, tokens
    out) are as written. Under the item's row lock, in the heartbeat's transaction (so no
    ending can run between the write and this)."""
    iteration, tokens_in, tokens_out = totals
    fields = {"w": worker_id, "i": work_item_id, "seq": 0, "fseq": 0, "o": uuid.uuid4().hex}
    fields |= {"it": iteration, "in": tokens_in, "out": tokens_out}
    try:
        with redis_client().pipeline(transaction=True) as pipe:
            pipe.delete(_key(digest)).hset(_key(digest), mapping=fields)
            pipe.expire(_key(digest), _ttl()).srem(_dirty(), digest).execute()
    except Exception as exc:  # closed: every beat takes the slow path
        _unavailable(exc, "; not opened")


def beat_take(digest: str, *, close: bool) -> Pending | None:
    """The beats buffered for this digest and not yet written, or None. ``close``: the fast
    path closes too (an ending, or a slow beat that reopens it), under the item's row lock.
    Redis failing: None (what it holds is written when it answers again, if still open)."""
    try:
        h = _script("take", _TAKE)(
            keys=[_key(digest), _dirty()], args=["1" if close else "0", digest]
        )
    except Exception as exc:
        _unavailable(exc)
        return None
    w, it, tin, tout, cost, model, at, pat, seq, fseq, opened, now = (
        x.decode() if isinstance(x, bytes) else x for x in h
    )
    if not w or at is None or int(seq) <= int(fseq):
        return None
    return Pending(
        iteration=int(it),
        tokens_in=int(tin),
        tokens_out=int(tout),
        cost_usd=Decimal(cost) if cost else None,
        model=model or None,
        age=max(int(now) - int(at), 0) / 1000,
        progress_age=max(int(now) - int(pat), 0) / 1000 if pat else None,
        seq=int(seq),
        opened=opened,
    )


def beat_ack(digest: str, pending: Pending) -> None:
    """The beats taken as ``pending`` are written (after the commit): off the dirty set unless
    more came meanwhile, or the fast path was opened anew (by a slow beat) since."""
    args = [pending.seq, digest, pending.opened]
    try:
        _script("ack", _ACK)(keys=[_key(digest), _dirty()], args=args)
    except Exception as exc:  # still dirty: written again next time (the same totals)
        _unavailable(exc)


def beats_dirty(limit: int) -> list[tuple[str, str, str]]:
    """Up to ``limit`` digests with beats to write, each with its worker and item ids."""
    client = redis_client()
    try:
        digests = [d.decode() for d in client.srandmember(_dirty(), limit)]
        with client.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.hmget(_key(digest), "w", "i")
            ids = pipe.execute()
        gone = [d for d, (w, _) in zip(digests, ids, strict=True) if not w]  # expired
        if gone:
            client.srem(_dirty(), *gone)
    except Exception as exc:  # written when it answers again
        _unavailable(exc)
        return []
    return [(d, w.decode(), i.decode()) for d, (w, i) in zip(digests, ids, strict=True) if w]


def _key(digest: str) -> str:
    return f"whim:beat:{_namespace()}:{digest}"


def _dirty() -> str:
    return f"whim:beats-dirty:{_namespace()}"


def _namespace() -> str:
    """The database's name: two deployments (or test databases) sharing a Redis stay apart."""
    return str(connection.settings_dict["NAME"])


def _ttl() -> int:
    """A hash outlives its attempt's silence long enough for the stale sweep to see it."""
    return int(2 * (settings.STALE_THRESHOLD + settings.HEARTBEAT_GRACE))


_warned_at = 0.0


def _unavailable(exc: Exception, consequence: str = "") -> None:
    """Redis failing: the slow path carries on. Said once a minute, not once a beat."""
    global _warned_at
    now = time.monotonic()
    level = logging.WARNING if now - _warned_at >= 60 else logging.DEBUG
    if level == logging.WARNING:
        _warned_at = now
    logger.log(level, "heartbeat buffer unavailable (%s)%s", type(exc).__name__, consequence)


_scripts: dict[tuple[int, str], Any] = {}


def _script(name: str, source: str) -> Any:
    client = redis_client()
    script = _scripts.get((id(client), name))
    if script is None:
        script = _scripts[(id(client), name)] = client.register_script(source)
    return script

"""The cost ledger: tokens and money charged once per attempt, and the limits that read it.

A worker reports its attempt's CUMULATIVE tokens and cost (heartbeat, complete). The attempt's
Worker row holds what has been charged for it so far; a report charges only the DELTA (new
cumulative - already charged), under the worker's row lock, to the item (``WorkItem.cost_usd``
and token totals) and to the day's ``CostUsage`` row for the item's repo and the model. A
repeated report charges nothing, a late one carrying a lower cumulative charges nothing, and
two reports racing are serialised by the lock: each unit is charged exactly once.

The limits: ``DAILY_COST_BUDGET`` (the dispatch gate reads ``cost_spent_today``) and the
per-item cap (metadata ``maxCostUsd``, else ``ITEM_COST_CAP``) whose remainder each attempt's
container gets as ``WHIM_COST_CAP_USD`` (``cost_cap_remaining``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db.models import F, Sum

from orchestration.clock import budget_date
from orchestration.models import CostUsage, Worker, WorkItem
from orchestration.rows import counters_add

# Money is kept to the micro-dollar (the columns' six decimal places).
MICRO = Decimal("0.000001")
ZERO = Decimal(0)


def usd(value: Any) -> Decimal:
    """A non-negative amount of dollars as a Decimal of six places (bad input: 0)."""
    if isinstance(value, bool) or value is None:
        return ZERO
    try:
        amount = Decimal(str(value)).quantize(MICRO)
    except (InvalidOperation, ValueError):
        return ZERO
    return amount if amount.is_finite() and amount > 0 else ZERO


def usd_text(amount: Decimal) -> str:
    """``Decimal("4.500000")`` as ``4.5``; zero as ``0`` (what the container and pages show)."""
    text = format(amount.quantize(MICRO).normalize(), "f")
    return text if text != "-0" else "0"


@dataclasses.dataclass(frozen=True)
class Charge:
    """What one report added to the ledger (all zero for a repeat)."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: Decimal = ZERO

    @property
    def empty(self) -> bool:
        return not (self.tokens_in or self.tokens_out or self.cost_usd)


def cost_charge(
    *,
    item: WorkItem,
    worker: Worker,
    now: dt.datetime,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    cost_usd: Decimal | float | None = None,
    model: str | None = None,
) -> Charge:
    """Charge what the attempt's cumulative report adds to what was already charged for it.

    Call inside a transaction holding the item-then-worker row locks
    (``rows.locked_item_and_worker``), with ``worker`` as read under them.

    1. Delta per measure: the new cumulative minus the worker's (never below 0). The cost is
       the reported one, or the tokens at the configured prices when none is reported.
    2. The worker's cumulatives rise to the report (and its model is remembered).
    3. The deltas are added to the item and, for the day in WHIM_TIMEZONE, to the row of the
       item's repo and the model (made on first use; F() updates, so concurrent charges to
       the same row from other attempts add up).

    The heartbeat runs the same steps with its own changes to the two rows folded into the
    same UPDATEs (``cost_assess`` for steps 1 and 2, ``cost_book`` for step 3).
    """
    charge, fields, model_now = cost_assess(
        worker=worker, tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost_usd, model=model
    )
    if fields:
        Worker.objects.filter(pk=worker.pk).update(**fields)
        for name, value in fields.items():
            setattr(worker, name, value)
    cost_book(item=item, charge=charge, model=model_now, now=now)
    return charge


def cost_assess(
    *,
    worker: Worker,
    tokens_in: int | None,
    tokens_out: int | None,
    cost_usd: Decimal | float | None,
    model: str | None,
) -> tuple[Charge, dict[str, Any], str]:
    """Steps 1 and 2 of ``cost_charge``, written nowhere: the charge, the worker's columns
    that change (its cumulatives and model; empty when none does) and the model charged."""
    # An agent that reports no cost (codex, most command agents) is charged its tokens at the
    # configured prices, so the daily budget and the item's cap hold for it too.
    cost = estimated_cost(
        tokens_in=max(tokens_in or 0, worker.tokens_in),
        tokens_out=max(tokens_out or 0, worker.tokens_out),
        reported=usd(cost_usd),
    )
    charge = Charge(
        tokens_in=max((tokens_in or 0) - worker.tokens_in, 0),
        tokens_out=max((tokens_out or 0) - worker.tokens_out, 0),
        cost_usd=max(cost - worker.cost_usd, ZERO),
    )
    model = (model or "").strip()[:100] or worker.model
    fields: dict[str, Any] = {}
    if charge.tokens_in:
        fields["tokens_in"] = worker.tokens_in + charge.tokens_in
    if charge.tokens_out:
        fields["tokens_out"] = worker.tokens_out + charge.tokens_out
    if charge.cost_usd:
        fields["cost_usd"] = worker.cost_usd + charge.cost_usd
    if model != worker.model:
        fields["model"] = model
    return charge, fields, model


def cost_book(
    *,
    item: WorkItem,
    charge: Charge,
    model: str,
    now: dt.datetime,
    item_fields: dict[str, Any] | None = None,
) -> None:
    """Step 3 of ``cost_charge``: the charge added to the item (with ``item_fields``, the
    caller's own change to the item, in the same UPDATE) and to the day's row of its repo
    and model. Nothing to write: no statement."""
    if not charge.empty:
        item_fields = {
            **(item_fields or {}),
            "tokens_in": F("tokens_in") + charge.tokens_in,
            "tokens_out": F("tokens_out") + charge.tokens_out,
            "cost_usd": F("cost_usd") + charge.cost_usd,
        }
    if item_fields:
        WorkItem.objects.filter(pk=item.pk).update(**item_fields)
    if charge.empty:
        return
    counters_add(
        CostUsage,
        {"date": budget_date(now), "repo": item.repo, "model": model},
        {
            "tokens_in": charge.tokens_in,
            "tokens_out": charge.tokens_out,
            "cost_usd": charge.cost_usd,
        },
    )


def cost_spent_today(now: dt.datetime) -> Decimal:
    """What the ledger charged on ``now``'s calendar day (WHIM_TIMEZONE)."""
    total = CostUsage.objects.filter(date=budget_date(now)).aggregate(c=Sum("cost_usd"))["c"]
    return total or ZERO


def daily_cost_budget() -> Decimal | None:
    """DAILY_COST_BUDGET in dollars, or None when it is off (0)."""
    budget = usd(settings.DAILY_COST_BUDGET)
    return budget if budget > 0 else None


def item_cost_cap(item: WorkItem) -> Decimal | None:
    """The item's cap over all its attempts: metadata ``maxCostUsd`` (0: none for this item),
    else ITEM_COST_CAP (0: none). None when the item has no cap."""
    meta = item.metadata if isinstance(item.metadata, dict) else {}
    raw = meta.get("maxCostUsd")
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        cap = usd(raw)
    else:
        cap = usd(settings.ITEM_COST_CAP)
    return cap if cap > 0 else None


def cost_cap_remaining(item: WorkItem) -> Decimal | None:
    """What the item's next attempt may still spend (its cap - its cost so far, at least 0);
    None when it has no cap."""
    cap = item_cost_cap(item)
    if cap is None:
        return None
    return max(cap - item.cost_usd, ZERO)


def estimated_cost(*, tokens_in: int, tokens_out: int, reported: Decimal) -> Decimal:
    """An attempt's cost: what its agent reported, or, when it reported none, its tokens at
    TOKEN_PRICE_IN_PER_MILLION / TOKEN_PRICE_OUT_PER_MILLION."""
    if reported > 0:
        return reported
    return usd(
        (
            tokens_in * settings.TOKEN_PRICE_IN_PER_MILLION
            + tokens_out * settings.TOKEN_PRICE_OUT_PER_MILLION
        )
        / 1_000_000
    )

"""Claim throughput over 2 and 4 nodes against 1 node, in the same run (issue 13's capacity
note, README "Running on several hosts").

K threads claim a queue of N items, each claim choosing a node with free capacity as dispatch
does (the nodes register with room to spare, so capacity never stops a claim); nudges go
nowhere (``claims.quiet``): what is measured is the claim with its node choice.
"""

from __future__ import annotations

import functools

from bench.claims import drain, quiet, seed
from bench.core import Benchmark, Context, Figure, interleave
from orchestration.models import Node
from orchestration.services.nodes import node_register


def claim_rate(n: int, claimers: int, nodes: int) -> float:
    """Claims per second of ``claimers`` threads over ``nodes`` nodes."""
    seed(n)  # the items go, and their attempts with them
    Node.objects.all().delete()
    for i in range(nodes):
        node_register(name=f"n{i}", runtime="fake", capacity=10**6, labels=[])
    return n / drain(claimers, True)


def fleet(ctx: Context) -> list[Figure]:
    n = ctx.size(600, 40)
    k = 4 if not ctx.smoke else 2
    figures = []
    with quiet():
        for nodes in (2, 4):
            many, one = interleave(
                ctx,
                a=functools.partial(claim_rate, n, k, nodes),
                b=functools.partial(claim_rate, n, k, 1),
            )
            figures.append(
                Figure(
                    f"claims over {nodes} nodes, {k} claimers",
                    "items/s",
                    many,
                    one,
                    "the same claims on 1 node",
                    higher_is_better=True,
                )
            )
    ctx.reset_db()
    return figures


BENCHMARKS = [Benchmark("nodes", "claim throughput over 2 and 4 nodes against 1", fleet)]

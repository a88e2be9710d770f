"""Does a page of the run history cost the same deep in a big history? Keyset cursor against OFFSET.

Run from the repository root::

    python benchmarks/history_paging.py                    # 200 000 runs in a temporary SQLite store
    python benchmarks/history_paging.py --runs 50000 --rounds 21

Fills one tenant's history with *runs* small runs (two to a start time, as bursts of webhooks give), then times
fetching a page of 50 with :meth:`zingyconn.history.RunHistory.list` at the newest runs and at 10 %, 50 % and 90 %
of the way back, by the keyset cursor the console uses (``after=(started_at, id)``), and, for comparison, the same
page by ``OFFSET`` (the plain query the console does not use). Prints p50 and p90 per depth. Target: the cursor's
p50 at 90 % depth within 3x of the first page's, where OFFSET grows with the depth.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from zingyconn.database import create_engine
from zingyconn.history import RunHistory
from zingyconn.schema import runs

PAGE = 50
DEPTHS = (0.0, 0.1, 0.5, 0.9)
#: How much slower than the first page a page 90 % deep may be, by cursor.
TARGET_RATIO = 3.0


def _fill(engine: sa.Engine, count: int) -> None:
    rows = [
        {"id": f"run_{n:032x}", "tenant": "acme", "kind": "webhook", "name": "sms", "status": "ok",
         "attempt": 1, "started_at": 1_700_000_000.0 + n // 2, "stored_bytes": 0}
        for n in range(count)
    ]  # fmt: skip
    with engine.begin() as conn:
        for start in range(0, count, 10_000):
            conn.execute(runs.insert(), rows[start : start + 10_000])


def _offset_page(engine: sa.Engine, offset: int) -> list[str]:
    query = (
        sa.select(runs.c.id)
        .where(runs.c.tenant == "acme")
        .order_by(runs.c.started_at.desc(), runs.c.id)
        .offset(offset)
        .limit(PAGE)
    )
    with engine.connect() as conn:
        return [row.id for row in conn.execute(query)]


def _timed(call: object, rounds: int) -> list[float]:
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        took.append((time.perf_counter() - started) * 1000)
    return sorted(took)


def main() -> None:
    """Fill a store, then time pages at each depth by cursor and by OFFSET."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        engine = create_engine(f"sqlite:///{Path(directory) / 'store.db'}")
        _fill(engine, args.runs)
        history = RunHistory(engine)
        p50s = {}
        print(f"{args.runs} runs, pages of {PAGE}, {args.rounds} rounds; milliseconds")
        print(f"{'depth':>6} {'cursor p50':>11} {'p90':>7} {'OFFSET p50':>11} {'p90':>7}")
        for depth in DEPTHS:
            offset = int(args.runs * depth)
            before = _offset_page(engine, offset - 1)[0] if offset else None
            after = None
            if before is not None:
                row = history.get("acme", before)
                after = (row.started_at, row.id)
            by_cursor = _timed(lambda a=after: history.list("acme", after=a, limit=PAGE), args.rounds)
            by_offset = _timed(lambda o=offset: _offset_page(engine, o), args.rounds)
            p50s[depth] = statistics.median(by_cursor)
            p90 = max(0, int(len(by_cursor) * 0.9) - 1)
            print(
                f"{depth:>6.0%} {p50s[depth]:>11.2f} {by_cursor[p90]:>7.2f} "
                f"{statistics.median(by_offset):>11.2f} {by_offset[p90]:>7.2f}"
            )
        ratio = p50s[DEPTHS[-1]] / p50s[0.0]
        verdict = "meets" if ratio <= TARGET_RATIO else "misses"
        print(
            f"cursor p50 at {DEPTHS[-1]:.0%} depth / first page: {ratio:.2f}x ({verdict} the {TARGET_RATIO:g}x target)"
        )
        engine.dispose()


if __name__ == "__main__":
    main()

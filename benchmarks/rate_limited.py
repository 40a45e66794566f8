"""Rate-limited: a batch against a server capped at 50 requests/s, with max_concurrency=64.

Target: >= 0.9 x 50 items per second achieved, zero failed items. The stand-in's cap is a token bucket
that starts full (one second's worth, 50 requests), so the rate is also printed without that free
burst, and the target is judged on it: (items - 50) / wall time.

For contrast, the same server with 64 threads calling ``O3MiniHook.chat`` on their own (the same
retry policy, each backing off alone, no shared controller): how many 429s they draw, and how many
calls fail once their retries run out.

Run: ``.venv/bin/python benchmarks/rate_limited.py`` (options: ``--items``, ``--rps``, ``--latency``,
``--concurrency``, ``--contrast-items``; ``--contrast-items 0`` skips the contrast).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import quiet, standin_process, use_connection, verdict

from airflow_o3.testing.context import stub_context

PROMPT = "Row {{ index }}: give the industry of {{ item.company }} in three words."


def batch(items: int, concurrency: int) -> tuple[float, dict]:
    from airflow_o3.operators import O3MiniBatchOperator

    operator = O3MiniBatchOperator(
        task_id="enrich",
        items=[{"company": f"Company {n}"} for n in range(items)],
        prompt=PROMPT,
        limits={"max_concurrency": concurrency},
        on_item_error="continue",
    )
    context = stub_context()
    started = time.perf_counter()
    operator.execute(context)
    return time.perf_counter() - started, context["ti"].xcoms["batch"]


def workers_on_their_own(items: int, concurrency: int, rps: float, latency: float) -> tuple[float, int, int]:
    """``concurrency`` threads, each calling the hook alone: seconds, 429s drawn, calls that failed.

    The server runs in this process here, to count its 429s; this is not a speed measurement.
    """
    from airflow_o3.errors import O3Error
    from airflow_o3.hooks import O3MiniHook
    from airflow_o3.testing import StandInServer

    failed = 0

    def call(index: int) -> None:
        nonlocal failed
        try:
            hook.chat([{"role": "user", "content": f"Row {index}: give the industry of Company {index}."}])
        except O3Error:
            failed += 1

    with StandInServer(max_requests_per_second=rps, latency=latency) as server:
        use_connection(server.base_url)
        hook = O3MiniHook(pool_size=concurrency)
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(call, range(items)))
        elapsed = time.perf_counter() - started
        return elapsed, server.stats["rate_limited"], failed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--rps", type=float, default=50.0)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--contrast-items", type=int, default=300)
    args = parser.parse_args()

    with standin_process(latency=args.latency, rps=args.rps) as base_url:
        use_connection(base_url)
        with quiet():
            elapsed, summary = batch(args.items, args.concurrency)
    contrast = None
    if args.contrast_items:
        with quiet():
            contrast = workers_on_their_own(args.contrast_items, args.concurrency, args.rps, args.latency)

    burst = args.rps  # the server's bucket starts with one second's worth of requests
    overall = args.items / elapsed
    steady = (args.items - burst) / elapsed
    failed = summary["failed"] + summary["not_sent"]
    print(
        f"rate-limited: {args.items:,} items, server capped at {args.rps:.0f} requests/s (token bucket, "
        f"burst {burst:.0f}), latency {args.latency * 1000:.0f} ms, max_concurrency {args.concurrency}"
    )
    print(
        f"  O3MiniBatchOperator   {elapsed:6.2f} s; {overall:5.1f} items/s overall, "
        f"{steady:5.1f} without the burst"
    )
    print(
        f"                        = {steady / args.rps:.3f} x the cap; {failed} failed items; "
        f"{summary['rate_limited']} 429s met by the whole batch"
    )
    if contrast is not None:
        seconds, drawn, lost = contrast
        print(
            f"  contrast: {args.concurrency} threads each backing off on its own, "
            f"{args.contrast_items} calls: {seconds:.2f} s, {drawn:,} 429s drawn, "
            f"{lost} calls failed after their retries"
        )
    met = steady >= 0.9 * args.rps and failed == 0
    print(f"target (>= 0.9 x {args.rps:.0f}/s without the burst, zero failed items): {verdict(met)}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())

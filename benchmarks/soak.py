"""Soak: 5,000 calls through O3MiniHook while the stand-in server injects 10% 429/5xx faults.

Target: every call delivered, zero duplicates. Run: ``.venv/bin/python benchmarks/soak.py``
(options: ``--calls``, ``--fault-rate``, ``--threads``, ``--seed``).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-o3-bench-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--fault-rate", type=float, default=0.10)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args()

    logging.getLogger("airflow_o3.retry").setLevel(logging.ERROR)
    from airflow_o3.errors import O3Error
    from airflow_o3.hooks import O3MiniHook
    from airflow_o3.testing import StandInServer

    with StandInServer() as server:
        os.environ["AIRFLOW_CONN_AIMLAPI_DEFAULT"] = server.connection_json("soak-key")
        server.inject_faults(rate=args.fault_rate, statuses=(429, 500, 502, 503, 504), seed=args.seed)
        hook = O3MiniHook(
            retry={"max_attempts": 10, "initial_backoff": 0.005, "max_backoff": 0.05},
            pool_size=args.threads,
        )
        hook.call_log_level = logging.DEBUG  # 5,000 per-call summary lines would bury the figures
        failures: list[str] = []

        def call(index: int) -> bool:
            try:
                completion = hook.chat(
                    [{"role": "user", "content": f"Row {index}: give its industry."}],
                    client_request_id=f"soak-{index}",
                    reasoning_effort="low",
                )
            except O3Error as error:
                failures.append(f"{index}: {error}")
                return False
            return bool(completion.text) and f"Row {index}:" in completion.text

        started = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            results = list(pool.map(call, range(args.calls)))
        elapsed = time.perf_counter() - started
        stats = server.stats
        by_key = server.delivered_by_key

    delivered = sum(results)
    duplicated = sum(count - 1 for count in by_key.values() if count > 1)
    retried = stats["received"] - args.calls
    print(
        f"soak: {args.calls} calls, {args.threads} threads, fault rate {args.fault_rate:.0%}, {elapsed:.1f}s"
    )
    print(f"  attempted  {args.calls}")
    print(f"  delivered  {delivered}")
    print(f"  failed     {len(failures)}")
    print(f"  duplicated {duplicated}")
    print(
        f"  retried    {retried}  (requests beyond one per call; faults injected: {stats['faults_injected']})"
    )
    print(f"  server     received {stats['received']}, delivered {stats['delivered']}")
    for failure in failures[:5]:
        print(f"  failure    {failure}")
    met = delivered == args.calls and duplicated == 0 and not failures
    print(f"target (every call delivered, zero duplicates): {'MET' if met else 'NOT MET'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())

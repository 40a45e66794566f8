"""Batch: 2,000 items at 100 ms server latency with max_concurrency=64, two figures the issue names.

(a) The task's whole duration (``O3MiniBatchOperator.execute``: rendering every item, the calls,
    publishing the XComs) against its calls alone (the engine's ``elapsed_s``, the first request to
    the last reply). Target: <= 1.10 x.
(b) The calls against the stand-in server alone: the same number of requests from 64 threads with bare
    ``requests`` (the ceiling of this Python server on this machine; the batch cannot beat it).
    Target: the calls reach 0.97 of the ceiling's speed (server alone / calls >= 0.97, that is calls
    <= 1.031 x the server alone).

Printed beside them: the ideal ``items x latency / concurrency``, and the same work through dynamic
task mapping (``O3MiniOperator.partial().expand()``) and through the batch operator, both in
``dag.test()``, for ``--mapped-items`` items (200 by default: mapping pays a task instance per item, so
the 2,000-item figure is extrapolated from the per-item cost).

Run: ``.venv/bin/python benchmarks/batch.py`` (options: ``--items``, ``--latency``, ``--concurrency``,
``--mapped-items``; ``--mapped-items 0`` skips the dag.test() comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

_HOME = tempfile.mkdtemp(prefix="airflow-o3-bench-batch-")
_DAGS = Path(_HOME) / "dags"
_DAGS.mkdir()
os.environ.update(
    {
        "AIRFLOW_HOME": _HOME,
        "AIRFLOW__CORE__DAGS_FOLDER": str(_DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
        "AIRFLOW__API_AUTH__JWT_SECRET": "airflow-o3-bench-jwt-secret-not-a-secret",
        "AIRFLOW__API__SECRET_KEY": "airflow-o3-bench-api-secret-not-a-secret",
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
    }
)

from _common import quiet, standin_process, use_connection, verdict  # noqa: E402

from airflow_o3.testing.context import stub_context  # noqa: E402

PROMPT = "Row {{ index }}: give the industry of {{ item.company }} in three words."

MAPPED_DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG, task
from airflow_o3.operators import O3MiniBatchOperator, O3MiniOperator

with DAG(dag_id="bench_mapped", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    @task
    def prompts():
        return [f"Row {{n}}: give the industry of Company {{n}} in three words." for n in range({items})]

    O3MiniOperator.partial(task_id="ask").expand(prompt=prompts())

with DAG(dag_id="bench_batched", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    @task
    def rows():
        return [{{"company": f"Company {{n}}"}} for n in range({items})]

    O3MiniBatchOperator(
        task_id="ask", items=rows(), prompt={prompt!r}, limits={{"max_concurrency": {concurrency}}}
    )
"""


def server_alone(base_url: str, items: int, concurrency: int) -> float:
    """Seconds for ``items`` bare requests from ``concurrency`` threads: the server's own ceiling."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=concurrency))
    url = f"{base_url}/chat/completions"
    headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}

    def call(index: int) -> None:
        content = f"Row {index}: give the industry of Company {index} in three words."
        body = {"model": "o3-mini", "messages": [{"role": "user", "content": content}]}
        session.post(url, data=json.dumps(body), headers=headers).json()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(call, range(items)))
    return time.perf_counter() - started


def batch_operator(items: int, concurrency: int) -> tuple[float, dict]:
    """Seconds for ``O3MiniBatchOperator.execute`` over ``items`` rows, and its ``batch`` XCom."""
    from airflow_o3.operators import O3MiniBatchOperator

    rows = [{"company": f"Company {n}"} for n in range(items)]
    operator = O3MiniBatchOperator(
        task_id="enrich", items=rows, prompt=PROMPT, limits={"max_concurrency": concurrency}
    )
    context = stub_context()
    started = time.perf_counter()
    values = operator.execute(context)
    elapsed = time.perf_counter() - started
    assert len(values) == items and all(values), "every item has a reply"
    return elapsed, context["ti"].xcoms["batch"]


def in_dag_test(items: int, concurrency: int) -> tuple[float, float]:
    """``dag.test()`` wall time of the mapped DAG and of the batch DAG, ``items`` each."""
    from tests.dagrun import _prepare_airflow_for_tests, run_dag

    (_DAGS / "bench_dags.py").write_text(
        textwrap.dedent(MAPPED_DAG.format(items=items, prompt=PROMPT, concurrency=concurrency))
    )
    _prepare_airflow_for_tests()
    mapped = run_dag("bench_mapped")
    batched = run_dag("bench_batched")
    for result in (mapped, batched):
        result.assert_success()
    assert len(mapped.xcom("ask")) == len(batched.xcom("ask")) == items
    return mapped.duration, batched.duration


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--mapped-items", type=int, default=200)
    args = parser.parse_args()
    ideal = args.items * args.latency / args.concurrency

    with standin_process(latency=args.latency) as base_url:
        use_connection(base_url)
        with quiet():
            batch_operator(args.concurrency, args.concurrency)  # warm-up: imports, pools, templates
            alone = server_alone(base_url, args.items, args.concurrency)
            elapsed, summary = batch_operator(args.items, args.concurrency)
        mapped = batched = None
        if args.mapped_items:
            with quiet():
                mapped, batched = in_dag_test(args.mapped_items, args.concurrency)

    print(
        f"batch: {args.items:,} items, server latency {args.latency * 1000:.0f} ms, max_concurrency "
        f"{args.concurrency}; stand-in in its own process on loopback; {os.cpu_count()} cores"
    )
    calls = summary["elapsed_s"]
    print(f"  ideal (items x latency / concurrency)       {ideal:7.3f} s")
    print(
        f"  stand-in alone (bare requests, {args.concurrency} threads)  {alone:7.3f} s  "
        "(this server's ceiling here)"
    )
    print(
        f"  the batch's calls (first request to last reply)  {calls:7.3f} s  "
        f"({summary['items_per_s']:.0f} items/s; {summary['succeeded']:,} succeeded, "
        f"{summary['failed']} failed)"
    )
    print(f"  the whole task (O3MiniBatchOperator.execute)     {elapsed:7.3f} s")
    whole, ceiling = elapsed / calls, alone / calls
    print(f"(a) whole task / its calls alone:    {whole:.3f} x   target <= 1.10 x: {verdict(whole <= 1.10)}")
    print(
        f"(b) server alone / the batch's calls: {ceiling:.3f}     target >= 0.97 "
        f"(calls {calls / alone:.3f} x the server alone): {verdict(ceiling >= 0.97)}"
    )
    met = whole <= 1.10 and ceiling >= 0.97
    if mapped is not None and batched is not None:
        items = args.mapped_items
        per_mapped = mapped / items
        print(f"same work in dag.test(), {items} items (mapped task instances run one after another there):")
        print(
            f"  dynamic task mapping (O3MiniOperator.partial().expand())  {mapped:7.2f} s  = "
            f"{per_mapped * 1000:.0f} ms per item; {args.items:,} items ~ {per_mapped * args.items:.0f} s "
            f"(extrapolated per item)"
        )
        print(
            f"  O3MiniBatchOperator                                       {batched:7.2f} s  = "
            f"{batched / items * 1000:.1f} ms per item; {mapped / batched:.0f} x faster"
        )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())

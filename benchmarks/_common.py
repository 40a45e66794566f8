"""What the benchmarks share: the stand-in server in its own process, a quiet stdout, a stub task context.

The stand-in runs as ``python -m airflow_o3.testing`` in a separate process on loopback, so it has
its own interpreter lock (and, on a 2-core machine, its own core) and its work is not counted as the
client's. Log lines (one per call from the hook, progress lines from the batch) go to /dev/null while
a measurement runs, so a terminal's speed is not measured either; results print afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-o3-bench-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

BENCH_KEY = "bench-key-not-a-secret"


@contextlib.contextmanager
def standin_process(*, latency: float = 0.0, rps: float | None = None) -> Iterator[str]:
    """Run the stand-in server in its own process; yield its base URL (``http://127.0.0.1:PORT/v1``)."""
    command = [sys.executable, "-m", "airflow_o3.testing", "--port", "0", "--latency", str(latency)]
    if rps:
        command += ["--rps", str(rps)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://\S+)", line)
        if match is None:
            raise RuntimeError(f"the stand-in server did not start: {line!r}")
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)


def use_connection(base_url: str) -> None:
    """Point ``aimlapi_default`` at ``base_url``."""
    os.environ["AIRFLOW_CONN_AIMLAPI_DEFAULT"] = json.dumps(
        {"conn_type": "aimlapi", "host": base_url, "password": BENCH_KEY}
    )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Send file descriptors 1 and 2 to /dev/null (log lines included) for the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"

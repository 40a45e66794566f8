"""Per-call overhead: ``O3MiniHook.chat`` against a bare ``requests.Session().post(...).json()``.

Target: ``O3MiniHook.chat`` <= 1.05 x the bare call, with its summary line at INFO, to the same
stand-in server (its own process, on loopback, no latency by default so that only the client's cost
shows). The hook's call includes everything a task pays: the contract check of the body, the retry
settings, the typed reply, the per-call summary line (sent to /dev/null) and the metrics.

The hook's session reads the proxy environment once, where a default ``requests.Session`` scans it on
every call; so a bare session with ``trust_env=False`` is printed too, to show the hook's own cost
over the same transport.

Run: ``.venv/bin/python benchmarks/per_call.py`` (options: ``--latency`` seconds, ``--rounds``,
``--calls`` per round).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_KEY, median, quiet, standin_process, use_connection, verdict

MESSAGES = [{"role": "user", "content": "Name three prime numbers."}]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    import requests

    with standin_process(latency=args.latency) as base_url:
        use_connection(base_url)
        from airflow_o3.hooks import O3MiniHook

        hook = O3MiniHook()
        quiet_hook = O3MiniHook()
        quiet_hook.call_log_level = logging.DEBUG
        url = f"{base_url}/chat/completions"
        body = {"model": "o3-mini", "messages": MESSAGES}
        headers = {"Authorization": f"Bearer {BENCH_KEY}"}
        bare = requests.Session()
        no_env = requests.Session()
        no_env.trust_env = False
        contenders = {
            "bare": lambda: bare.post(url, json=body, headers=headers).json(),
            "bare_no_env": lambda: no_env.post(url, json=body, headers=headers).json(),
            "hook": lambda: hook.chat(MESSAGES),
            "hook_debug_line": lambda: quiet_hook.chat(MESSAGES),
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        with quiet():
            for call in contenders.values():
                for _ in range(args.calls):
                    call()
            for _ in range(args.rounds):  # interleaved, so a noisy moment hits all of them alike
                for name, call in contenders.items():
                    started = time.perf_counter()
                    for _ in range(args.calls):
                        call()
                    times[name].append((time.perf_counter() - started) / args.calls)

    per_call = {name: median(values) for name, values in times.items()}
    ratio = per_call["hook"] / per_call["bare"]
    print(
        f"per call: {args.rounds} interleaved rounds of {args.calls} calls each; stand-in in its own "
        f"process on loopback, latency {args.latency * 1000:.0f} ms; median of the rounds"
    )
    hook, bare, no_env = per_call["hook"], per_call["bare"], per_call["bare_no_env"]
    line = hook - per_call["hook_debug_line"]
    print(f"  bare requests.Session().post(...).json()          {bare * 1e6:7.0f} us")
    print(f"  O3MiniHook.chat                                   {hook * 1e6:7.0f} us  = {ratio:.3f} x bare")
    print(
        f"  bare session with trust_env=False (no env scan)   {no_env * 1e6:7.0f} us  (the hook = "
        f"{hook / no_env:.3f} x this: its own cost over the same transport)"
    )
    print(
        f"  of the hook's time, its INFO summary line (structlog)  {line * 1e6:4.0f} us  (with the line at "
        f"DEBUG the hook = {per_call['hook_debug_line'] / bare:.3f} x bare)"
    )
    met = ratio <= 1.05
    print(f"target (hook <= 1.05 x bare, summary line at INFO): {verdict(met)}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())

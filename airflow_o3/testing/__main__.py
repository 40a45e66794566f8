"""Run the o3-mini stand-in server in the foreground.

    python -m airflow_o3.testing --port 8765 [--latency 0.1] [--api-key KEY] [--rps 10]

It prints the base URL and the ``AIRFLOW_CONN_AIMLAPI_DEFAULT`` value to export, then serves
until interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import shlex
import threading

from airflow_o3.testing.server import STANDIN_API_KEY, StandInServer


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv``, start the server and block until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m airflow_o3.testing", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765, help="TCP port, 0 for any free one (default: 8765)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each chat answer")
    parser.add_argument("--api-key", default=None, help="require this bearer key on chat requests")
    parser.add_argument("--rps", type=float, default=None, help="max chat requests per second (429 above)")
    args = parser.parse_args(argv)
    server = StandInServer(
        port=args.port,
        latency=args.latency,
        api_key=args.api_key,
        max_requests_per_second=args.rps,
    )
    with server:
        key = args.api_key or STANDIN_API_KEY
        print(f"o3-mini stand-in serving at {server.base_url}", flush=True)
        print(f"export AIRFLOW_CONN_AIMLAPI_DEFAULT={shlex.quote(server.connection_json(key))}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopped", flush=True)


if __name__ == "__main__":
    main()

"""A local stand-in for AI/ML API's o3-mini chat completions endpoint, for DAG and hook tests.

``StandInServer`` serves contract-shaped completions on 127.0.0.1 and records what it receives;
the types from :mod:`airflow_o3.testing.faults` script errors, stalls, resets and odd bodies. The
pytest fixtures ``o3_standin`` and ``o3_standin_connection`` are opt-in
(:mod:`airflow_o3.testing.pytest_plugin`). Importing this package does not import Airflow or an
HTTP client.
"""

from __future__ import annotations

from airflow_o3.testing.context import StubTaskInstance, stub_context
from airflow_o3.testing.faults import (
    Body,
    ConnectionReset,
    ErrorShape,
    HttpError,
    NonJson,
    RateLimited,
    Reply,
    ScriptItem,
    Stall,
    StreamCut,
)
from airflow_o3.testing.server import (
    RecordedRequest,
    StandInServer,
    default_reply,
    example_for_schema,
    price,
)

__all__ = [
    "Body",
    "ConnectionReset",
    "ErrorShape",
    "HttpError",
    "NonJson",
    "RateLimited",
    "RecordedRequest",
    "Reply",
    "ScriptItem",
    "Stall",
    "StandInServer",
    "StreamCut",
    "StubTaskInstance",
    "default_reply",
    "example_for_schema",
    "price",
    "stub_context",
]

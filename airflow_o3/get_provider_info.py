"""Provider metadata, found by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_o3 import __version__

CONNECTION_TYPE: dict[str, Any] = {
    "hook-class-name": "airflow_o3.hooks.o3mini.O3MiniHook",
    "hook-name": "AI/ML API (o3-mini)",
    "connection-type": "aimlapi",
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port", "login"],
        "relabeling": {"host": "Base URL", "password": "API Key"},
        "placeholders": {
            "host": "https://api.aimlapi.com/v1 (leave empty for the service)",
            "password": "your AI/ML API key",
        },
    },
    "conn-fields": {
        "model": {
            "label": "Default model",
            "description": "Model used when a task names none.",
            "schema": {"type": ["string", "null"], "default": "o3-mini"},
        },
        "connect_timeout": {
            "label": "Connect timeout (s)",
            "description": "Seconds to wait for the connection to open.",
            "schema": {"type": ["number", "null"], "default": 10, "minimum": 0},
        },
        "read_timeout": {
            "label": "Read timeout (s)",
            "description": "Seconds to wait for the reply; a high reasoning effort can take minutes.",
            "schema": {"type": ["number", "null"], "default": 600, "minimum": 0},
        },
        "attempt_timeout": {
            "label": "Attempt timeout (s)",
            "description": "Seconds one attempt may take in all, however the reply trickles in; "
            "never less than the read timeout.",
            "schema": {"type": ["number", "null"], "default": 1800, "minimum": 1},
        },
        "max_reply_bytes": {
            "label": "Max reply size (bytes)",
            "description": "A larger reply is refused, and not asked for again (default 20 MB).",
            "schema": {"type": ["integer", "null"], "default": 20971520, "minimum": 1},
        },
        "max_attempts": {
            "label": "Max attempts",
            "description": "Requests sent at most per call when the service is rate limited or failing.",
            "schema": {"type": ["integer", "null"], "default": 5, "minimum": 1},
        },
        "max_retry_seconds": {
            "label": "Max retry time (s)",
            "description": "Seconds after which no new attempt starts.",
            "schema": {"type": ["number", "null"], "default": 900, "minimum": 0},
        },
        "daily_budget_usd": {
            "label": "Daily budget (USD)",
            "description": "Dollars this connection may spend per UTC day, over all tasks and workers; "
            "once reached, no new request starts until 00:00 UTC. Empty: no cap.",
            "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
        },
        "ledger_path": {
            "label": "Spend ledger path",
            "description": "Where the day's spend is kept: a local folder (one machine; default "
            "$AIRFLOW_HOME/o3_ledger) or a URL every worker reaches, e.g. s3://bucket/o3-ledger.",
            "schema": {"type": ["string", "null"]},
        },
        "ledger_refresh_seconds": {
            "label": "Ledger refresh (s)",
            "description": "How stale other workers' spend may be when the cap is checked; 0 reads it "
            "at every request.",
            "schema": {"type": ["number", "null"], "default": 5, "minimum": 0},
        },
        "billing_base_url": {
            "label": "Billing base URL",
            "description": "Where the account balance is read (GET /v1/billing/balance).",
            "schema": {"type": ["string", "null"], "default": "https://billing.aimlapi.com"},
        },
    },
}


def get_provider_info() -> dict[str, Any]:
    """What ``airflow providers list`` and the connection form know about this provider."""
    return {
        "package-name": "airflow-o3",
        "name": "AI/ML API o3-mini",
        "description": "Call OpenAI o3-mini through the AI/ML API service from Airflow tasks.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "AI/ML API",
                "external-doc-url": "https://docs.aimlapi.com/",
                "tags": ["ai", "llm", "openai", "text-generation"],
            }
        ],
        "hooks": [{"integration-name": "AI/ML API", "python-modules": ["airflow_o3.hooks.o3mini"]}],
        "operators": [
            {
                "integration-name": "AI/ML API",
                "python-modules": [
                    "airflow_o3.operators.o3mini",
                    "airflow_o3.operators.batch",
                    "airflow_o3.operators.branch",
                ],
            }
        ],
        "task-decorators": [
            {"class-name": "airflow_o3.decorators.o3_mini.o3_mini_task", "name": "o3_mini"},
            {
                "class-name": "airflow_o3.decorators.o3_mini_branch.o3_mini_branch_task",
                "name": "o3_mini_branch",
            },
        ],
        "triggers": [{"integration-name": "AI/ML API", "python-modules": ["airflow_o3.triggers.o3mini"]}],
        "connection-types": [CONNECTION_TYPE],
    }

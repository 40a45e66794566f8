"""Support-ticket triage: o3-mini classifies a ticket into a schema, and the DAG branches on the label.

Trigger one run per ticket, e.g. from the help desk's webhook, with the run conf
``{"ticket": {"id": "T-1042", "text": "..."}}``. ``classify`` answers with JSON matching
``CLASSIFICATION`` (label, confidence, reason), validated before it goes downstream; ``route``
sends the ticket to the queue of its label, or to a person when the model is not confident enough.

Runs on the real service with an ``aimlapi_default`` connection holding your key, or on the stand-in
server (``python -m airflow_o3.testing`` prints the connection to export). Check the request for free
with ``airflow-o3-render`` or by setting ``dry_run=True`` on ``classify``.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_o3.operators import O3MiniOperator

LABELS = ("billing", "bug", "feature_request", "other")
CONFIDENT = 0.7
"""Below this confidence a person looks at the ticket, whatever the label."""

CLASSIFICATION: dict[str, Any] = {
    "title": "TicketClassification",
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": list(LABELS), "description": "The team that should handle it."},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1, "description": "How sure, 0 to 1."},
        "reason": {"type": "string", "description": "One sentence a support agent can act on."},
    },
}

EXAMPLE_TICKET = {
    "id": "T-1042",
    "text": "I was charged twice for my March subscription. Please refund one of the payments.",
}

with DAG(
    dag_id="o3_classify_tickets",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["airflow-o3", "example"],
) as dag:

    @task
    def load_ticket(dag_run: Any = None) -> dict[str, str]:
        """The ticket of this run, from the run conf (the example ticket when triggered by hand)."""
        conf = getattr(dag_run, "conf", None) or {}
        return conf.get("ticket") or EXAMPLE_TICKET

    ticket = load_ticket()

    classify = O3MiniOperator(
        task_id="classify",
        system_prompt=(
            "You triage customer support tickets. Pick the one label whose team should handle the "
            "ticket: billing (payments, invoices, refunds), bug (something is broken), feature_request "
            "(something new is wanted) or other. Give your confidence from 0 to 1 and one short reason."
        ),
        prompt=(
            "Ticket {{ ti.xcom_pull(task_ids='load_ticket')['id'] }}:\n\n"
            "{{ ti.xcom_pull(task_ids='load_ticket')['text'] }}"
        ),
        response_format=CLASSIFICATION,
        json_retries=1,
        reasoning_effort="low",
        max_completion_tokens=2000,
    )
    ticket >> classify

    @task.branch
    def route(classification: dict[str, Any]) -> str:
        """The task of the label's queue, or ``needs_human`` when the model is unsure."""
        if classification["confidence"] < CONFIDENT:
            return "needs_human"
        return f"handle_{classification['label']}"

    decision = route(classify.output)

    @task
    def assign(classification: dict[str, Any], ticket: dict[str, str]) -> dict[str, str]:
        """Put the ticket in its label's queue; a real DAG calls the help desk's API here."""
        return {"ticket": ticket["id"], "queue": classification["label"], "reason": classification["reason"]}

    @task
    def needs_human(classification: dict[str, Any], ticket: dict[str, str]) -> dict[str, str]:
        """Leave the ticket to a person, with the model's best guess as a hint."""
        return {
            "ticket": ticket["id"],
            "queue": "triage",
            "hint": (
                f"{classification['label']} ({classification['confidence']:.0%}): {classification['reason']}"
            ),
        }

    for label in LABELS:
        decision >> assign.override(task_id=f"handle_{label}")(classify.output, ticket)
    decision >> needs_human(classify.output, ticket)

"""Ticket triage in TaskFlow style: ``@task.o3_mini`` classifies a ticket into a schema, and
``@task.branch`` routes it on the label, or to a person when the model is not confident enough.

The same flow as ``o3_classify_tickets``, with the prompt built by a function: the ticket reaches it
as an argument (no ``ti.xcom_pull`` in a template, no ``>>`` written by hand) and its text is sent as
data, never rendered. Trigger one run per ticket with the run conf
``{"ticket": {"id": "T-1042", "text": "..."}}``.

Runs on the real service with an ``aimlapi_default`` connection holding your key, or on the stand-in
server (``python -m airflow_o3.testing`` prints the connection to export).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import dag, task

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


@dag(
    dag_id="o3_classify_tickets_taskflow",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["airflow-o3", "example", "taskflow"],
)
def o3_classify_tickets_taskflow() -> None:
    @task
    def load_ticket(dag_run: Any = None) -> dict[str, str]:
        """The ticket of this run, from the run conf (the example ticket when triggered by hand)."""
        conf = getattr(dag_run, "conf", None) or {}
        return conf.get("ticket") or EXAMPLE_TICKET

    @task.o3_mini(
        system_prompt=(
            "You triage customer support tickets. Pick the one label whose team should handle the "
            "ticket: billing (payments, invoices, refunds), bug (something is broken), feature_request "
            "(something new is wanted) or other. Give your confidence from 0 to 1 and one short reason."
        ),
        response_format=CLASSIFICATION,
        json_retries=1,
        reasoning_effort="low",
        max_completion_tokens=2000,
    )
    def classify(ticket: dict[str, str]) -> str:
        """The prompt: the ticket's id and text."""
        return f"Ticket {ticket['id']}:\n\n{ticket['text']}"

    @task.branch
    def route(classification: dict[str, Any]) -> str:
        """The task of the label's queue, or ``needs_human`` when the model is unsure."""
        if classification["confidence"] < CONFIDENT:
            return "needs_human"
        return f"handle_{classification['label']}"

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

    ticket = load_ticket()
    classification = classify(ticket)
    decision = route(classification)
    for label in LABELS:
        decision >> assign.override(task_id=f"handle_{label}")(classification, ticket)
    decision >> needs_human(classification, ticket)


o3_classify_tickets_taskflow()

"""Branching on a reply: o3-mini reads a ticket and chooses the team that handles it.

``route`` is a ``@task.o3_mini_branch`` task: its function returns the question, and the model must
answer with one of the labels in ``TEAMS`` (a strict enum, so it cannot answer anything else) and a
short reason. The label's task runs; Airflow skips the others. The choice and the reason are in the
log and in ``route``'s XCom. Trigger one run per ticket with the run conf
``{"ticket": {"id": "T-1042", "text": "..."}}``.

Runs on the real service with an ``aimlapi_default`` connection holding your key, or on the stand-in
server (``python -m airflow_o3.testing`` prints the connection to export; it always picks the first
label).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import dag, task

from airflow_o3.operators.branch import Branch

TEAMS = {
    "billing": Branch("handle_billing", "payments, invoices, refunds, prices"),
    "engineering": Branch("handle_engineering", "something is broken, slow or missing in the product"),
    "sales": Branch("handle_sales", "a new customer, an upgrade, a quote"),
}

EXAMPLE_TICKET = {
    "id": "T-1042",
    "text": "I was charged twice for my March subscription. Please refund one of the payments.",
}


@dag(
    dag_id="o3_branch_tickets",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["airflow-o3", "example", "taskflow"],
)
def o3_branch_tickets() -> None:
    @task
    def load_ticket(dag_run: Any = None) -> dict[str, str]:
        """The ticket of this run, from the run conf (the example ticket when triggered by hand)."""
        conf = getattr(dag_run, "conf", None) or {}
        return conf.get("ticket") or EXAMPLE_TICKET

    @task.o3_mini_branch(
        system_prompt="You route customer support tickets to the team that can solve them.",
        choices=TEAMS,
        reasoning_effort="low",
        max_completion_tokens=2000,
    )
    def route(ticket: dict[str, str]) -> str:
        """The question: which team should handle this ticket."""
        return f"Which team should handle ticket {ticket['id']}?\n\n{ticket['text']}"

    @task
    def hand_over(ticket: dict[str, str], team: str) -> dict[str, str]:
        """Put the ticket in the team's queue; a real DAG calls the help desk's API here."""
        return {"ticket": ticket["id"], "queue": team}

    ticket = load_ticket()
    decision = route(ticket)
    for team, branch in TEAMS.items():
        decision >> hand_over.override(task_id=branch.task_id)(ticket, team)


o3_branch_tickets()

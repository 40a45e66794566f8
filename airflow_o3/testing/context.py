"""A stand-in task context for calling an operator's ``execute`` directly in a unit test.

A ``MagicMock`` as ``ti`` breaks Airflow's sandboxed Jinja environment; this small class does not::

    context = stub_context()
    O3MiniOperator(task_id="ask", prompt="Hi").execute(context)
    assert context["ti"].xcoms["usage"]["total_tokens"] > 0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StubTaskInstance:
    """Just enough of a task instance for ``execute``: its ids, and an ``xcom_push`` that keeps values.

    :ivar xcoms: what ``execute`` pushed, by key.
    """

    dag_id: str = "stub_dag"
    task_id: str = "ask"
    run_id: str = "manual__2026-01-01"
    map_index: int = -1
    try_number: int = 1
    xcoms: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        """Record the value under ``key``, as Airflow's XCom would."""
        self.xcoms[key] = value


def stub_context(**ids: Any) -> dict[str, Any]:
    """A context holding only a :class:`StubTaskInstance` (built with ``ids``) under ``ti``."""
    return {"ti": StubTaskInstance(**ids)}

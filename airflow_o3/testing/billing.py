"""The stand-in's billing endpoint: ``GET /v1/billing/balance``, shaped as the service's contract says.

The real service serves it on a billing host of its own; the stand-in serves it on its own port,
so a connection's ``billing_base_url`` extra is the stand-in's root (:func:`billing_base_url`)::

    with StandInServer() as srv:
        billing_for(srv).credits = 5_000  # below the threshold: lowBalance is true
        extras = {"billing_base_url": billing_base_url(srv)}

A request without ``Authorization: Bearer <key>`` (or with another key than the server's
``api_key``, when it has one) gets 401; ``billing_for(srv).fail_with`` answers an error instead.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_o3.testing.server import RecordedRequest, StandInServer, _Handler

BALANCE_PATHS = frozenset({"/v1/billing/balance"})


@dataclass
class BillingState:
    """What the stand-in's billing endpoint answers; change it while the server runs.

    :ivar credits: the balance, in credits.
    :ivar low_threshold: credits under which ``lowBalance`` is true.
    :ivar fail_with: answer this HTTP status instead (with an error body), e.g. 503.
    """

    credits: float = 10_000_000
    low_threshold: float = 10_000
    status: str = "current"
    auto_debit_status: str = "disabled"
    fail_with: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def body(self) -> dict[str, Any]:
        """The contract's reply: every required field, of its type."""
        with self.lock:
            credits, threshold, status = self.credits, self.low_threshold, self.status
            auto_debit = self.auto_debit_status
        return {
            "balance": credits,
            "lowBalance": credits < threshold,
            "lowBalanceThreshold": threshold,
            "lastUpdated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "autoDebitStatus": auto_debit,
            "status": status,
            "statusExplanation": "Balance is current and up to date"
            if status == "current"
            else f"The plan is {status}",
        }


_states: weakref.WeakKeyDictionary[StandInServer, BillingState] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


def billing_for(server: StandInServer) -> BillingState:
    """The billing state of a stand-in server (created with the defaults on first use)."""
    with _states_lock:
        state = _states.get(server)
        if state is None:
            state = _states[server] = BillingState()
        return state


def billing_base_url(server: StandInServer) -> str:
    """The value of the connection extra ``billing_base_url`` for this server."""
    return f"http://{server.host}:{server.port}"


def answer_balance(server: StandInServer, handler: _Handler, record: RecordedRequest) -> None:
    """Answer one request to the balance path (called on the connection's thread)."""
    state = billing_for(server)
    authorization = record.header("Authorization") or ""
    if record.method != "GET":
        handler.respond_json(405, {"message": f"Cannot {record.method} /v1/billing/balance"}, {})
    elif not authorization.startswith("Bearer ") or (
        server.api_key is not None and authorization != f"Bearer {server.api_key}"
    ):
        handler.respond_json(401, {"message": "Unauthorized", "statusCode": 401}, {})
    elif state.fail_with is not None:
        handler.respond_json(
            state.fail_with, {"message": "billing is unavailable", "statusCode": state.fail_with}, {}
        )
    else:
        handler.respond_json(200, state.body(), {})

"""The stand-in's billing endpoint: ``GET /v1/billing/balance``, shaped as the service's contract says.

The real service serves it on a billing host of its own; the stand-in serves it on its own port,
so a connection's ``billing_base_url`` extra is the stand-in's root (:func:`billing_base_url`)::

    with StandInServer() as srv:
        srv.billing.credits = 5_000  # below the threshold: lowBalance is true
        extras = {"billing_base_url": billing_base_url(srv)}

A request without ``Authorization: Bearer <key>`` (or with another key than the server's
``api_key``, when it has one) gets 401; ``srv.billing.fail_with`` answers an error instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_o3.testing.server import RecordedRequest, StandInServer

BALANCE_PATH = "/v1/billing/balance"


@dataclass
class BillingState:
    """What the stand-in's billing endpoint answers; change it while the server runs.

    :ivar credits: the balance, in credits.
    :ivar low_threshold: credits under which ``lowBalance`` is true.
    :ivar fail_with: answer this HTTP status instead (with an error body), e.g. 503.
    """

    credits: float = 10_000_000
    low_threshold: float = 10_000
    fail_with: int | None = None

    def body(self) -> dict[str, Any]:
        """The contract's reply: every required field, of its type."""
        credits, threshold = self.credits, self.low_threshold
        return {
            "balance": credits,
            "lowBalance": credits < threshold,
            "lowBalanceThreshold": threshold,
            "lastUpdated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "autoDebitStatus": "disabled",
            "status": "current",
            "statusExplanation": "Balance is current and up to date",
        }


def billing_base_url(server: StandInServer) -> str:
    """The value of the connection extra ``billing_base_url`` for this server."""
    return f"http://{server.host}:{server.port}"


def answer_balance(server: StandInServer, record: RecordedRequest) -> tuple[int, dict[str, Any]]:
    """The status and JSON body that answer one request to the balance path."""
    authorization = record.header("Authorization") or ""
    if record.method != "GET":
        return 405, {"message": f"Cannot {record.method} {BALANCE_PATH}"}
    if not authorization.startswith("Bearer ") or (
        server.api_key is not None and authorization != f"Bearer {server.api_key}"
    ):
        return 401, {"message": "Unauthorized", "statusCode": 401}
    failure = server.billing.fail_with
    if failure is not None:
        return failure, {"message": "billing is unavailable", "statusCode": failure}
    return 200, server.billing.body()

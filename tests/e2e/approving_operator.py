"""O3MiniOperator with require_approval wired in as docs/approval.md ("Wiring") tells the operator to
wire it, so the approval tests run on a branch where O3MiniOperator does not take the argument yet.
Once O3MiniOperator is a ReplyApproval, ``ApprovingO3MiniOperator`` is O3MiniOperator itself and
every approval test runs on the real operator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_o3.operators.approval import DEFAULT_APPROVAL_TIMEOUT, ReplyApproval
from airflow_o3.operators.o3mini import O3MiniOperator

if TYPE_CHECKING:
    from datetime import timedelta

    from airflow.providers.common.compat.sdk import Context

    from airflow_o3.response import Completion


if issubclass(O3MiniOperator, ReplyApproval):
    ApprovingO3MiniOperator = O3MiniOperator
else:

    class ApprovingO3MiniOperator(ReplyApproval, O3MiniOperator):  # type: ignore[no-redef]
        """O3MiniOperator with ``require_approval`` and ``approval_timeout``."""

        def __init__(
            self,
            *,
            require_approval: bool = False,
            approval_timeout: timedelta | float = DEFAULT_APPROVAL_TIMEOUT,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self.init_approval(require_approval, approval_timeout)

        def publish(self, context: Context, completion: Completion, **kwargs: Any) -> Any:
            return self.await_approval(context, super().publish(context, completion, **kwargs))

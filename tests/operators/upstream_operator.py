"""O3MiniOperator with ``inputs``, for the tests of :mod:`airflow_o3.operators.upstream` until the
operator lists :class:`UpstreamInputsMixin` itself; then it is O3MiniOperator."""

from __future__ import annotations

from typing import Any

from airflow_o3.operators.o3mini import O3MiniOperator
from airflow_o3.operators.upstream import UpstreamInputsMixin, checked_inputs

if issubclass(O3MiniOperator, UpstreamInputsMixin):
    AskWithInputs = O3MiniOperator
else:

    class AskWithInputs(UpstreamInputsMixin, O3MiniOperator):  # type: ignore[no-redef]
        """The lines O3MiniOperator needs: the mixin, the template field, the argument."""

        template_fields = (*O3MiniOperator.template_fields, "inputs")

        def __init__(self, *, inputs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.inputs = checked_inputs(self.task_id, inputs)

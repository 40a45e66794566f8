"""What Airflow itself calls on an operator keeps working, on Airflow 3 and 2.11."""

from __future__ import annotations

import pytest

from airflow_o3.operators import O3MiniOperator
from airflow_o3.operators.batch import O3MiniBatchOperator


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("operator_class", [O3MiniOperator, O3MiniBatchOperator])
def test_the_dry_run_argument_leaves_baseoperators_dry_run_method_callable(operator_class, dry_run):
    """Airflow 2's ``tasks test --dry-run`` calls ``task.dry_run()``: the argument must not hide it."""
    extra = {"items": ["a"]} if operator_class is O3MiniBatchOperator else {}
    operator = operator_class(task_id="ask", prompt="Hello {{ ds }}", dry_run=dry_run, **extra)
    operator.dry_run()  # BaseOperator's: logs the template fields, sends nothing
    assert operator.dry_run_only is dry_run

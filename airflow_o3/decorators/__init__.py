"""TaskFlow decorators of airflow-o3: ``@task.o3_mini`` and ``@task.o3_mini_branch``."""

from __future__ import annotations

from airflow_o3.decorators.o3_mini import o3_mini_task
from airflow_o3.decorators.o3_mini_branch import o3_mini_branch_task

__all__ = ["o3_mini_branch_task", "o3_mini_task"]

"""Operators of airflow-o3."""

from __future__ import annotations

from airflow_o3.operators.batch import O3MiniBatchOperator
from airflow_o3.operators.o3mini import O3MiniOperator

__all__ = ["O3MiniBatchOperator", "O3MiniOperator"]

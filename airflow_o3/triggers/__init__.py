"""Triggers of airflow-o3 (imported by the triggerer, never at DAG parse time)."""

from __future__ import annotations

from airflow_o3.triggers.o3mini import O3MiniTrigger

__all__ = ["O3MiniTrigger"]

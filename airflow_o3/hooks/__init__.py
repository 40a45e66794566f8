"""Hooks of airflow-o3."""

from __future__ import annotations

from airflow_o3.hooks.o3mini import O3MiniHook

__all__ = ["O3MiniHook"]

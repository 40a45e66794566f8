"""Apache Airflow provider for OpenAI o3-mini through the AI/ML API service."""

from __future__ import annotations

__version__ = "0.3.0"

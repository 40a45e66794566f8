"""Airflow plugins shipped with the provider: the o3-mini spend page (``spend``)."""

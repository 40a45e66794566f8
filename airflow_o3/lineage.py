"""OpenLineage for o3-mini tasks: a run facet saying which model answered, to what (a hash of the
prompt, never the prompt), at what cost. The facet is described in docs/observability.md.

Imported only by :meth:`O3MiniOperator.get_openlineage_facets_on_complete`, which the OpenLineage
provider calls when it is installed and enabled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attr
from airflow.providers.common.compat.openlineage.facet import Dataset, RunFacet
from airflow.providers.openlineage.extractors import OperatorLineage

O3Lineage = OperatorLineage[Dataset, RunFacet]
"""What the operator reports: no datasets, one run facet."""

FACET_NAME = "airflow_o3"
SCHEMA_URL = "https://airflow-o3.readthedocs.io/en/latest/openlineage-run-facet.json#/$defs/O3MiniRunFacet"


def prompt_sha256(messages: Sequence[Mapping[str, Any]]) -> str:
    """The sha256 of the rendered messages as canonical JSON (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(list(messages), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@attr.define
class O3MiniRunFacet(RunFacet):
    """What one o3-mini task asked and paid: the model, a hash of the prompt, tokens and cost."""

    model: str
    promptSha256: str
    promptTokens: int | None = None
    cachedPromptTokens: int | None = None
    completionTokens: int | None = None
    reasoningTokens: int | None = None
    totalTokens: int | None = None
    costUsd: float | None = None
    creditsUsed: float | None = None
    attempts: int | None = None
    fromCache: bool | None = None

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_URL


def _count(usage: Mapping[str, Any], *path: str) -> int | None:
    node: Any = usage
    for name in path:
        node = node.get(name) if isinstance(node, Mapping) else None
    return node if isinstance(node, int) and not isinstance(node, bool) else None


def run_facet(
    *, model: str, messages: Sequence[Mapping[str, Any]], usage: Mapping[str, Any], from_cache: bool | None
) -> O3MiniRunFacet:
    """The facet from the published ``usage`` record (see the operator's XCom contract)."""
    cost = usage.get("usd_spent")
    credits = usage.get("credits_used")
    return O3MiniRunFacet(
        model=model,
        promptSha256=prompt_sha256(messages),
        promptTokens=_count(usage, "prompt_tokens"),
        cachedPromptTokens=_count(usage, "prompt_tokens_details", "cached_tokens"),
        completionTokens=_count(usage, "completion_tokens"),
        reasoningTokens=_count(usage, "completion_tokens_details", "reasoning_tokens"),
        totalTokens=_count(usage, "total_tokens"),
        costUsd=float(cost) if isinstance(cost, int | float) else None,
        creditsUsed=float(credits) if isinstance(credits, int | float) else None,
        attempts=_count(usage, "attempts"),
        fromCache=from_cache,
    )


def operator_lineage(published: Mapping[str, Any] | None) -> O3Lineage:
    """What the OpenLineage provider reports for the task: no datasets, and the :func:`run_facet` of
    what it ``published`` (``None``: nothing was asked, no facet)."""
    return O3Lineage(run_facets={FACET_NAME: run_facet(**published)} if published is not None else {})

"""
OpenLineage for an aggregate build: the aggregate tables a batch wrote, and what the batch was.

Imported only by ``AtScaleAggregateBuildOperator.get_openlineage_facets_on_complete``, which only
apache-airflow-providers-openlineage calls: without that provider nothing here is imported.

AtScale names each aggregate table (``tableSchema``, ``tableName``) and the data-warehouse connection it
lives in (``connectionId``), not the warehouse's address. The connection's ``lineage_namespaces`` extra maps
those connection ids to OpenLineage namespaces (``snowflake://acme-xy12345``, with an optional database to
prefix the names with); an unmapped connection falls back to ``atscale://<AtScale host>/<connection id>``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from attrs import define
from openlineage.client.facet_v2 import RunFacet

from airflow_provider_atscale.errors import AtScaleError

if TYPE_CHECKING:
    from airflow_provider_atscale.batches import AggregateBatch, AggregateInstance
    from airflow_provider_atscale.hooks.atscale import AtScaleHook

RUN_FACET_NAME = "atscale_aggregate_batch"

log = logging.getLogger(__name__)


@define
class AtScaleAggregateBatchRunFacet(RunFacet):
    """
    The AtScale aggregate batch a task ran.

    :param batchId: the batch id.
    :param catalogId: the catalog's id.
    :param modelId: the model's id.
    :param buildType: ``full`` or ``incremental``.
    :param status: the batch's final status, as AtScale reports it.
    """

    # camelCase, as OpenLineage facets are in JSON.
    batchId: str
    catalogId: str
    modelId: str
    buildType: str
    status: str

    @staticmethod
    def _get_schema() -> str:
        return "https://pypi.org/project/airflow-provider-atscale/#AtScaleAggregateBatchRunFacet"


def aggregate_build_lineage(hook: AtScaleHook, batch: AggregateBatch, *, full_build: bool) -> Any:
    """
    The lineage of a finished build: one output dataset per aggregate table the batch built.

    :param hook: the hook of the task's connection (for the batch's aggregates and the namespace mapping).
    :param batch: the batch, as it finished.
    :param full_build: whether it was a full build.
    :return: an ``OperatorLineage``.
    """
    from airflow.providers.common.compat.openlineage.facet import (
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    try:
        aggregates = hook.list_batch_aggregates(batch.catalog_id, batch.model_id, batch.id)
    except AtScaleError as error:
        log.warning("No lineage for the aggregates of AtScale batch %s: %s", batch.id, error)
        aggregates = []
    outputs = []
    for aggregate in aggregates:
        if not aggregate.is_built or not aggregate.table_name:
            continue
        namespace, name = _dataset(hook, aggregate)
        facets: dict[str, Any] = {}
        if aggregate.number_of_rows is not None:
            facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(rowCount=aggregate.number_of_rows)
        outputs.append(OutputDataset(namespace=namespace, name=name, outputFacets=facets))
    facet = AtScaleAggregateBatchRunFacet(
        batchId=batch.id,
        catalogId=batch.catalog_id,
        modelId=batch.model_id,
        buildType="full" if full_build else "incremental",
        status=batch.status,
    )
    return OperatorLineage(outputs=outputs, run_facets={RUN_FACET_NAME: facet})


def _dataset(hook: AtScaleHook, aggregate: AggregateInstance) -> tuple[str, str]:
    """The namespace and name of an aggregate table."""
    settings = hook.settings
    connection = aggregate.connection_id
    target = settings.lineage_namespaces.get(connection) if connection else None
    table = ".".join(part for part in (aggregate.table_schema, aggregate.table_name) if part)
    if target is not None:
        return target.namespace, f"{target.database}.{table}" if target.database else table
    host = urlsplit(settings.base_url).netloc
    return (f"atscale://{host}/{connection}" if connection else f"atscale://{host}"), table

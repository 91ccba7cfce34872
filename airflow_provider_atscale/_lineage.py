"""
OpenLineage for an aggregate build, on every outcome: the model as the input (START, COMPLETE, FAIL), the
aggregate tables the batch built as outputs (COMPLETE), and what the batch was as a run facet (COMPLETE and
FAIL, with AtScale's reasons for the failing aggregates in the error).

Imported only by ``AtScaleAggregateBuildOperator.get_openlineage_facets_on_*``, which only
apache-airflow-providers-openlineage calls: without that provider nothing here is imported.

AtScale names each aggregate table (``tableSchema``, ``tableName``) and the data-warehouse connection it lives
in (``connectionId``), not the warehouse's address. The connection's ``lineage_namespaces`` extra maps those
connection ids to OpenLineage namespaces (``snowflake://acme-xy12345``, with an optional database to prefix
the names with); an unmapped connection falls back to ``atscale://<AtScale host>/<connection id>``. The model
is the dataset ``<catalog>/<model>`` in the namespace ``atscale://<AtScale host>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from attrs import define
from openlineage.client.facet_v2 import RunFacet

if TYPE_CHECKING:
    from airflow_provider_atscale._inputs import ConnectionSettings
    from airflow_provider_atscale.batches import AggregateBatch, AggregateInstance

RUN_FACET_NAME = "atscale_aggregate_batch"


@define
class AtScaleAggregateBatchRunFacet(RunFacet):
    """The AtScale aggregate batch a task ran: its id, catalog and model, ``full`` or ``incremental``, and its
    final status (or the last one seen)."""

    # camelCase, as OpenLineage facets are in JSON.
    batchId: str
    catalogId: str
    modelId: str
    buildType: str
    status: str

    @staticmethod
    def _get_schema() -> str:
        return "https://pypi.org/project/airflow-provider-atscale/#AtScaleAggregateBatchRunFacet"


def build_lineage(
    settings: ConnectionSettings,
    model: tuple[str, str],
    batch: AggregateBatch | None = None,
    *,
    build_type: str = "unknown",
    aggregates: Sequence[AggregateInstance] = (),
    error: str | None = None,
) -> Any:
    """The ``OperatorLineage`` of a build at one of its moments: the model (catalog and model, as the task
    names them) as the input, each built aggregate as an output, the batch (once there is one) and the
    error as run facets; host and namespaces from the connection's settings."""
    from airflow.providers.common.compat.openlineage.facet import (
        ErrorMessageRunFacet,
        InputDataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    host = urlsplit(settings.base_url).netloc
    outputs = []
    for aggregate in aggregates:
        if not aggregate.is_built or not aggregate.table_name:
            continue
        connection = aggregate.connection_id
        target = settings.lineage_namespaces.get(connection) if connection else None
        name = aggregate.table
        if target is None:
            namespace = f"atscale://{host}/{connection}" if connection else f"atscale://{host}"
        else:
            namespace, name = target.namespace, f"{target.database}.{name}" if target.database else name
        facets: dict[str, Any] = {}
        if aggregate.number_of_rows is not None:
            facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(rowCount=aggregate.number_of_rows)
        outputs.append(OutputDataset(namespace=namespace, name=name, outputFacets=facets))
    run_facets: dict[str, Any] = {}
    if batch is not None:
        run_facets[RUN_FACET_NAME] = AtScaleAggregateBatchRunFacet(
            batchId=batch.id,
            catalogId=batch.catalog_id,
            modelId=batch.model_id,
            buildType=build_type,
            status=batch.status,
        )
    if error is not None:
        run_facets["errorMessage"] = ErrorMessageRunFacet(message=error, programmingLanguage="python")
    inputs = [InputDataset(namespace=f"atscale://{host}", name="/".join(model))]
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets=run_facets)

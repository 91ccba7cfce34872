"""
A local emulator of the AtScale engine REST API, for demos and integration tests.

It serves, over real HTTP (FastAPI on uvicorn), the endpoints the provider uses: trigger an aggregate
batch, batch history, aggregate instances, catalogs, and the token endpoints. Batches move from ``new``
to ``inprogress`` to ``done`` (or ``failed``) as a clock advances; faults (503, 429, 500, dropped
connections, latency, short-lived tokens, a clock running ahead or behind) can be injected with a seeded
random generator.

By default it refuses what the real AtScale refuses:

- batch history (``/wapi/p/aggregate/batch-history``) is a private Design Center API: it takes a JWT (from
  ``POST /v1/token`` or the identity broker's grants) and answers 401 to a raw API token; turned off, it
  answers 403 to everyone;
- the instances endpoint has no paging: it ignores ``page`` and ``size`` and lists at most 10 rows, with no
  total; its ``batchId``, ``catalogId``, ``modelId``, ``status`` (one value or a comma-separated list),
  ``tableName`` and ``definitionId`` filters ask precise questions;
- batch history holds batches of another type (``aggregate_cleanup``, an invented name) beside the
  aggregate batches, newer than them and still running;
- the password grant knows the public client ``atscale-ai-link`` and two confidential clients that must
  send their secret.

Errors of the public ``/v1`` API have the NestJS shape seen on a live host::

    {"statusCode": 404, "message": "Model 'x' not found in catalog 'y'; ...",
     "error": {"cause": "NotFoundException"}}

the identity broker token endpoint answers OAuth style
(``{"error": "invalid_grant", "error_description": "Invalid user credentials"}``), and the Design Center
API in a shape of its own, which is a guess (see :mod:`~airflow_provider_atscale.emulator.errors`).

Use it in-process::

    with run_emulator(clock=ManualClock()) as emu:
        requests.post(f"{emu.url}/v1/aggregates-batch/catalogs/{DEFAULT_CATALOG_ID}/models/{DEFAULT_MODEL_ID}",
                      params={"isFullBuild": "true"}, headers={"Authorization": f"Bearer {emu.token}"})
        emu.clock.advance(60)

or from a shell: ``python -m airflow_provider_atscale.emulator --port 8711`` (``--help`` lists the options).

The rest of the package never imports this module: it pulls in FastAPI and uvicorn.
"""

from __future__ import annotations

from airflow_provider_atscale.emulator.app import create_api, create_app
from airflow_provider_atscale.emulator.clock import Clock, ManualClock, SystemClock
from airflow_provider_atscale.emulator.config import (
    DEFAULT_BUILD_SECONDS,
    DEFAULT_CATALOG_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_INSTANCES_ROW_LIMIT,
    DEFAULT_MODEL_ID,
    DEFAULT_MODELER_CLIENT_SECRET,
    DEFAULT_PASSWORD,
    DEFAULT_PUBLIC_API_CLIENT_SECRET,
    DEFAULT_QUEUE_SECONDS,
    DEFAULT_TOKEN_TTL_SECONDS,
    DEFAULT_USERNAME,
    DEMO_TOKEN,
    FAILING_MODEL_ID,
    MODELER_CLIENT_ID,
    PUBLIC_API_CLIENT_ID,
    SECOND_MODEL_ID,
    WIDE_MODEL_ID,
    AggregateDefinition,
    CatalogConfig,
    ClientConfig,
    EmulatorConfig,
    FaultConfig,
    ModelConfig,
    UserConfig,
    default_catalogs,
    default_clients,
)
from airflow_provider_atscale.emulator.errors import error_body
from airflow_provider_atscale.emulator.faults import Fault, FaultInjector
from airflow_provider_atscale.emulator.requestlog import RecordedRequest, RequestLog
from airflow_provider_atscale.emulator.server import (
    EmulatorServer,
    install_stop_handlers,
    run_emulator,
    serve_until_signalled,
)
from airflow_provider_atscale.emulator.state import OTHER_BATCH_TYPE, BatchRecord, EmulatorState
from airflow_provider_atscale.emulator.tokens import TokenIssuer

__all__ = [
    "DEFAULT_BUILD_SECONDS",
    "DEFAULT_CATALOG_ID",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_INSTANCES_ROW_LIMIT",
    "DEFAULT_MODELER_CLIENT_SECRET",
    "DEFAULT_MODEL_ID",
    "DEFAULT_PASSWORD",
    "DEFAULT_PUBLIC_API_CLIENT_SECRET",
    "DEFAULT_QUEUE_SECONDS",
    "DEFAULT_TOKEN_TTL_SECONDS",
    "DEFAULT_USERNAME",
    "DEMO_TOKEN",
    "FAILING_MODEL_ID",
    "MODELER_CLIENT_ID",
    "OTHER_BATCH_TYPE",
    "PUBLIC_API_CLIENT_ID",
    "SECOND_MODEL_ID",
    "WIDE_MODEL_ID",
    "AggregateDefinition",
    "BatchRecord",
    "CatalogConfig",
    "ClientConfig",
    "Clock",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "Fault",
    "FaultConfig",
    "FaultInjector",
    "ManualClock",
    "ModelConfig",
    "RecordedRequest",
    "RequestLog",
    "SystemClock",
    "TokenIssuer",
    "UserConfig",
    "create_api",
    "create_app",
    "default_catalogs",
    "default_clients",
    "error_body",
    "install_stop_handlers",
    "run_emulator",
    "serve_until_signalled",
]

"""
A local emulator of the AtScale engine REST API, for demos and integration tests.

It serves, over real HTTP (FastAPI on uvicorn), the endpoints the provider uses: trigger an aggregate
batch, batch history, aggregate instances, catalogs, and the token endpoints. Batches move from ``new``
to ``inprogress`` to ``done`` (or ``failed``) as a clock advances; faults (503, 429, 500, dropped
connections, latency, short-lived tokens) can be injected with a seeded random generator.

Every API error answers with one body shape::

    {"success": false, "error": {"code": 404, "message": "Model 'x' not found in catalog 'y'; ..."}}

except the identity broker token endpoint, which answers OAuth style:
``{"error": "invalid_grant", "error_description": "Invalid user credentials"}``.

Use it in-process::

    with run_emulator(clock=ManualClock()) as emu:
        requests.post(f"{emu.url}/v1/aggregates-batch/catalogs/{DEFAULT_CATALOG_ID}/models/{DEFAULT_MODEL_ID}",
                      params={"isFullBuild": "true"}, headers={"Authorization": f"Bearer {emu.token}"})
        emu.clock.advance(60)

or from a shell: ``python -m airflow_provider_atscale.emulator --port 8711``.

The rest of the package never imports this module: it pulls in FastAPI and uvicorn.
"""

from __future__ import annotations

from airflow_provider_atscale.emulator.app import create_api, create_app
from airflow_provider_atscale.emulator.clock import Clock, ManualClock, SystemClock
from airflow_provider_atscale.emulator.config import (
    DEFAULT_BUILD_SECONDS,
    DEFAULT_CATALOG_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_MODEL_ID,
    DEFAULT_PASSWORD,
    DEFAULT_QUEUE_SECONDS,
    DEFAULT_TOKEN_TTL_SECONDS,
    DEFAULT_USERNAME,
    DEMO_TOKEN,
    FAILING_MODEL_ID,
    SECOND_MODEL_ID,
    AggregateDefinition,
    CatalogConfig,
    EmulatorConfig,
    FaultConfig,
    ModelConfig,
    UserConfig,
    default_catalogs,
)
from airflow_provider_atscale.emulator.errors import error_body
from airflow_provider_atscale.emulator.faults import Fault, FaultInjector
from airflow_provider_atscale.emulator.requestlog import RecordedRequest, RequestLog
from airflow_provider_atscale.emulator.server import EmulatorServer, run_emulator, serve_until_signalled
from airflow_provider_atscale.emulator.state import BatchRecord, EmulatorState

__all__ = [
    "DEFAULT_BUILD_SECONDS",
    "DEFAULT_CATALOG_ID",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_MODEL_ID",
    "DEFAULT_PASSWORD",
    "DEFAULT_QUEUE_SECONDS",
    "DEFAULT_TOKEN_TTL_SECONDS",
    "DEFAULT_USERNAME",
    "DEMO_TOKEN",
    "FAILING_MODEL_ID",
    "SECOND_MODEL_ID",
    "AggregateDefinition",
    "BatchRecord",
    "CatalogConfig",
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
    "UserConfig",
    "create_api",
    "create_app",
    "default_catalogs",
    "error_body",
    "run_emulator",
    "serve_until_signalled",
]

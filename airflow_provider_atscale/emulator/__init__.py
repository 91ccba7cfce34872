"""
A local emulator of the AtScale engine REST API (FastAPI on uvicorn), for demos and integration tests: in
process with ``with run_emulator(clock=ManualClock()) as emu: ...``, or from a shell with
``python -m airflow_provider_atscale.emulator --port 8711``. ``docs/emulator.md`` says what it serves and
refuses. The rest of the package never imports it: it pulls in FastAPI and uvicorn.
"""

from __future__ import annotations

from airflow_provider_atscale.emulator.clock import ManualClock
from airflow_provider_atscale.emulator.config import (
    DEFAULT_CATALOG_ID,
    DEFAULT_MODEL_ID,
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    DEMO_TOKEN,
    FAILING_MODEL_ID,
    SECOND_MODEL_ID,
    WIDE_MODEL_ID,
    AggregateDefinition,
    CatalogConfig,
    EmulatorConfig,
    FaultConfig,
    ModelConfig,
    default_catalogs,
)
from airflow_provider_atscale.emulator.requestlog import RecordedRequest
from airflow_provider_atscale.emulator.server import EmulatorServer, run_emulator

__all__ = [
    "DEFAULT_CATALOG_ID",
    "DEFAULT_MODEL_ID",
    "DEFAULT_PASSWORD",
    "DEFAULT_USERNAME",
    "DEMO_TOKEN",
    "FAILING_MODEL_ID",
    "SECOND_MODEL_ID",
    "WIDE_MODEL_ID",
    "AggregateDefinition",
    "CatalogConfig",
    "EmulatorConfig",
    "EmulatorServer",
    "FaultConfig",
    "ManualClock",
    "ModelConfig",
    "RecordedRequest",
    "default_catalogs",
    "run_emulator",
]

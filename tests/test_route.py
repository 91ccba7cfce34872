"""
The route of one build through the provider's modules, counted: a reader should follow it in one pass.

One incremental build by ids, durable, waited on the worker against the emulator over real HTTP (the POST, the
token exchange, three history polls, the XComs), with every module of the provider imported first. A profiler
records each call into the provider (generator resumptions included, comprehensions left out); a *crossing*
is a call into a module other than the one of the call before. ``pytest tests/test_route.py -s`` prints the
route.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import airflow_provider_atscale
from airflow_provider_atscale.emulator import DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID
from tests.helpers import FakeStateStore, RecordingTaskInstance

if TYPE_CHECKING:
    from airflow_provider_atscale.emulator import EmulatorServer

MAX_CROSSINGS = 60
PACKAGE = Path(airflow_provider_atscale.__file__).parent


def provider_module(frame: FrameType) -> str | None:
    """The provider module a frame runs in, the emulator left out."""
    path = Path(frame.f_code.co_filename)
    if not path.is_relative_to(PACKAGE) or path.is_relative_to(PACKAGE / "emulator"):
        return None
    return path.relative_to(PACKAGE).as_posix()


def route_of(action: Any) -> list[str]:
    """The provider module of every call ``action`` makes into the provider, in order."""
    calls: list[str] = []

    def record(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and not frame.f_code.co_name.startswith("<"):
            module = provider_module(frame)
            if module is not None:
                calls.append(module)

    sys.setprofile(record)
    try:
        action()
    finally:
        sys.setprofile(None)
    return calls


def test_one_build_crosses_the_provider_modules_at_most_60_times(emulator: EmulatorServer) -> None:
    from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator

    for module in pkgutil.walk_packages(airflow_provider_atscale.__path__, "airflow_provider_atscale."):
        if ".emulator" not in module.name and not module.name.endswith("_lineage"):
            importlib.import_module(module.name)
    operator = AtScaleAggregateBuildOperator(
        task_id="build",
        catalog_id=DEFAULT_CATALOG_ID,
        model_id=DEFAULT_MODEL_ID,
        grace_period_overrides={"factinternetsales": 30},
        poll_interval=50,
        deferrable=False,
    )
    context = {"ti": RecordingTaskInstance(), "task_state_store": FakeStateStore()}

    calls = route_of(lambda: operator.execute(context))  # type: ignore[arg-type]

    requests = [(r.method, r.path.split("/")[1]) for r in emulator.request_log.entries()]
    assert requests == [("POST", "v1"), ("POST", "v1"), ("GET", "wapi"), ("GET", "wapi"), ("GET", "wapi")]
    route = [module for i, module in enumerate(calls) if i == 0 or module != calls[i - 1]]
    print(f"{len(calls)} calls, {len(route) - 1} crossings:\n" + " -> ".join(route))
    assert len(route) - 1 <= MAX_CROSSINGS

"""
DAGs that only the deployment tests run (``make test-deployment``), one per scenario.

Builds take seconds in the emulator and are polled every couple of seconds. Each scenario builds models of
its own (see ``deployment_catalog``). None of these DAGs is scheduled: the tests trigger them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG
from deployment_catalog import (
    BAD_TOKEN_CONN_ID,
    CATALOG_ID,
    DEMO_CATALOG_ID,
    DEMO_MODEL_ID,
    FAILING_MODEL_ID,
    MANY_DEFERRED,
    OUTAGE,
    POLL_INTERVAL,
    ROTATING_CONN_ID,
    TOKEN_ROTATION,
    TRIGGERER_RESTART,
    WORKER_KILL,
    ModelGroup,
)

from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator

START = datetime(2025, 1, 1)
TAGS = ["atscale", "deployment-test"]
# Short, so that a retry starts while the batch of the killed try is still running.
RETRY_DELAY = timedelta(seconds=1)


def deferred_builds(dag_id: str, group: ModelGroup, **task_args: object) -> None:
    """
    A DAG with one deferred build per model of ``group``, all allowed to run at once.

    :param dag_id: the DAG's id.
    :param group: the models to build.
    :param task_args: further arguments of every build task (retries, say).
    """
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, max_active_tasks=group.count, tags=TAGS):
        AtScaleAggregateBuildOperator.partial(
            task_id="build",
            catalog_id=CATALOG_ID,
            deferrable=True,
            poll_interval=POLL_INTERVAL,
            **task_args,
        ).expand(model_id=group.model_ids)


deferred_builds("atscale_deployment_many_deferred", MANY_DEFERRED)
deferred_builds("atscale_deployment_triggerer_restart", TRIGGERER_RESTART)
# A retry is allowed so that a first try lost to the outage shows as such rather than as a failed run.
deferred_builds("atscale_deployment_outage", OUTAGE, retries=1, retry_delay=RETRY_DELAY)
# No retry: a wait lost to the rotated token fails its task.
deferred_builds(
    "atscale_deployment_token_rotation", TOKEN_ROTATION, atscale_conn_id=ROTATING_CONN_ID, retries=0
)

with DAG("atscale_deployment_worker_kill", schedule=None, start_date=START, catchup=False, tags=TAGS):
    AtScaleAggregateBuildOperator(
        task_id="build",
        catalog_id=CATALOG_ID,
        model_id=WORKER_KILL.model_ids[0],
        deferrable=False,
        poll_interval=1,
        retries=1,
        retry_delay=RETRY_DELAY,
    )

with DAG("atscale_deployment_bad_credentials", schedule=None, start_date=START, catchup=False, tags=TAGS):
    AtScaleAggregateBuildOperator(
        task_id="build",
        catalog_id=DEMO_CATALOG_ID,
        model_id=DEMO_MODEL_ID,
        atscale_conn_id=BAD_TOKEN_CONN_ID,
        deferrable=False,
        poll_interval=POLL_INTERVAL,
        retries=0,
    )

# Both ways of waiting meet the failure: one on a worker, one on the triggerer. Their build types differ,
# so neither task can take the other's batch for its own.
with DAG("atscale_deployment_failing_build", schedule=None, start_date=START, catchup=False, tags=TAGS):
    for deferrable in (False, True):
        AtScaleAggregateBuildOperator(
            task_id="build_deferred" if deferrable else "build_on_worker",
            catalog_id=DEMO_CATALOG_ID,
            model_id=FAILING_MODEL_ID,
            full_build=not deferrable,
            deferrable=deferrable,
            poll_interval=POLL_INTERVAL,
            retries=0,
        )

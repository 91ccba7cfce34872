"""Running DAGs for real with dag.test() and reading what their tasks left behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.compat import AIRFLOW_V_3_0_PLUS, DAG, DagBag, XComModel, xcom_row_value


def dag_folders() -> tuple[Path, ...]:
    """
    The folders load_dag() parses: the example DAGs (written for Airflow 3's ``airflow.sdk``, so only
    there) and the test suite's own DAGs (every version).
    """
    from tests.conftest import _ROOT

    tests_dags = _ROOT / "tests" / "dags"
    return (_ROOT / "example_dags", tests_dags) if AIRFLOW_V_3_0_PLUS else (tests_dags,)


def load_dag(dag_id: str) -> DAG:
    """A DAG from the example DAGs or the test suite's DAGs, parsed as Airflow parses it."""
    for folder in dag_folders():
        bag = DagBag(dag_folder=str(folder))
        assert not bag.import_errors, bag.import_errors
        if dag_id in bag.dags:
            dag = bag.dags[dag_id]
            assert isinstance(dag, DAG)
            return dag
    raise LookupError(dag_id)


def xcoms(dag_id: str, run_id: str) -> dict[tuple[str, int, str], Any]:
    """Every XCom of a DAG run, by (task id, map index, key)."""
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == run_id).all()
        return {(row.task_id, row.map_index, row.key): xcom_row_value(row) for row in rows}


def task_states(dag_id: str, run_id: str) -> dict[tuple[str, int], tuple[str | None, int]]:
    """Each task instance's final state and try number."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .all()
        )
        return {(ti.task_id, ti.map_index): (ti.state, ti.try_number) for ti in rows}

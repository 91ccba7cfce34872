"""Running DAGs for real with dag.test() and reading what their tasks left behind."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG


def load_dag(dag_id: str) -> DAG:
    """A DAG from the example DAGs or the test suite's DAGs, parsed as Airflow parses it."""
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import _ROOT

    for folder in (_ROOT / "example_dags", _ROOT / "tests" / "dags"):
        bag = DagBag(dag_folder=str(folder))
        assert not bag.import_errors, bag.import_errors
        if dag_id in bag.dags:
            dag = bag.dags[dag_id]
            assert isinstance(dag, DAG)
            return dag
    raise LookupError(dag_id)


def xcoms(dag_id: str, run_id: str) -> dict[tuple[str, int, str], Any]:
    """Every XCom of a DAG run, by (task id, map index, key)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == run_id).all()
        return {(row.task_id, row.map_index, row.key): XComModel.deserialize_value(row) for row in rows}


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

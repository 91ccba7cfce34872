"""
The models the deployment tests build, shared by their DAGs, the emulator they run and the tests.

Each scenario builds models of its own, so that no task can take another scenario's batch for one of its
own (a retried task attaches to a running batch of its model and build type). The emulator serves them in
a catalog of their own, next to its demo catalog; the example DAGs and the failing-build scenario use the
demo catalog's models.

Plain Python on purpose: the DAG files import it as a sibling module, the emulator's launcher and the tests
as ``tests.deployment.dags.deployment_catalog``; ``.airflowignore`` keeps it from being parsed for DAGs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

_NAMESPACE = uuid.UUID("badf3532-b20a-58a6-8142-d7317fcde9ac")

CATALOG_ID = str(uuid.uuid5(_NAMESPACE, "catalog"))
CATALOG_NAME = "Deployment Checks"

# The emulator's demo catalog (python -m airflow_provider_atscale.emulator).
DEMO_CATALOG_ID = "fdcdd3e1-13fc-54c2-93fe-57e681e1968e"
DEMO_MODEL_ID = "0b44a9eb-8aa1-5aaa-8141-6d80ae5ce3bf"
FAILING_MODEL_ID = "8f37d9fd-6fa7-5d83-96b9-84a0e17ddda3"

# Seconds between two status checks of every build the deployment tests start.
POLL_INTERVAL = 2
# The connection with a token AtScale refuses; its variable is set by the deployment fixture.
BAD_TOKEN_CONN_ID = "atscale_bad_token"
# The connection whose token the rotation scenario rotates: created through the REST API, in Airflow's
# database, never in an environment variable.
ROTATING_CONN_ID = "atscale_rotating"


@dataclass(frozen=True)
class ModelGroup:
    """
    Models one scenario builds, all alike.

    :param name: the scenario's name, the prefix of its models' names.
    :param count: how many models.
    :param queue_seconds: how long each batch stays ``new``.
    :param build_seconds: how long each batch then stays ``inprogress``.
    """

    name: str
    count: int
    queue_seconds: float
    build_seconds: float

    @property
    def model_names(self) -> list[str]:
        """The models' names, in order."""
        return [f"{self.name}-{index:02d}" for index in range(self.count)]

    @property
    def model_ids(self) -> list[str]:
        """The models' ids, in order: stable, derived from their names."""
        return [str(uuid.uuid5(_NAMESPACE, name)) for name in self.model_names]


# Long enough that all 30 builds run at one time even when the tasks start slowly (about 5 s apart from
# first to last on 2 idle cores, 9 s on busy ones).
MANY_DEFERRED = ModelGroup("many-deferred", count=30, queue_seconds=1, build_seconds=30)
# Long enough to still be running when the triggerer is killed and when its successor takes over.
TRIGGERER_RESTART = ModelGroup("triggerer-restart", count=8, queue_seconds=1, build_seconds=20)
# Long enough to still be running when Airflow starts the retry of the killed task.
WORKER_KILL = ModelGroup("worker-kill", count=1, queue_seconds=1, build_seconds=15)
# Short: every poll the triggers make during the outage meets a 503, and the builds end within it.
OUTAGE = ModelGroup("outage", count=5, queue_seconds=1, build_seconds=5)
# Long enough to still be running when the token is rotated and the connection patched, and for each wait
# to poll a few times after that.
TOKEN_ROTATION = ModelGroup("token-rotation", count=5, queue_seconds=1, build_seconds=25)

GROUPS = (MANY_DEFERRED, TRIGGERER_RESTART, WORKER_KILL, OUTAGE, TOKEN_ROTATION)

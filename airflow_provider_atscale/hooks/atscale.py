"""The AtScale hook: the ``atscale`` connection, the token and every HTTP call to AtScale."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

from airflow_provider_atscale._compat import mask_secret
from airflow_provider_atscale._inputs import (
    BatchRef,
    BuildRequest,
    ConnectionSettings,
    check_one_of,
    parse_id,
    parse_name,
)
from airflow_provider_atscale.errors import AtScaleConfigurationError, AtScaleError, AtScaleNotFoundError
from airflow_provider_atscale.hooks import _calls, _http
from airflow_provider_atscale.hooks._form import with_connection_form

if TYPE_CHECKING:
    import aiohttp
    import requests

    from airflow_provider_atscale.batches import AggregateBatch, AggregateInstance

T = TypeVar("T")

log = logging.getLogger(__name__)


@with_connection_form
class AtScaleHook(BaseHook):
    """
    Talk to AtScale's engine API through an ``atscale`` Airflow connection (its fields and extras:
    ``_inputs.ConnectionSettings``).

    The hook reads its connection when it first needs it, and again only when asked (:meth:`reconnect`, which
    a wait calls when AtScale refuses the token or cannot be reached). One requests session serves every sync
    call; every request has a timeout; failures that may pass are retried within one budget per call, and a
    401 makes the hook authenticate again, once. The methods taking checked values (:meth:`start_build`,
    :meth:`read_batch`, ...) serve the provider's operators, which check their arguments once.

    :param atscale_conn_id: the Airflow connection id.
    """

    conn_name_attr = "atscale_conn_id"
    default_conn_name = "atscale_default"
    conn_type = "atscale"
    hook_name = "AtScale"

    def __init__(self, atscale_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.atscale_conn_id = atscale_conn_id
        self._server: _calls.ServerState | None = None
        self._http: requests.Session | None = None
        self._async_verify: list[bool | str] = []
        """The TLS settings whose shared aiohttp session this hook uses (counted in, to count out)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(atscale_conn_id={self.atscale_conn_id!r})"

    # The connection

    @property
    def settings(self) -> ConnectionSettings:
        """The connection's checked settings, as read last."""
        return self._state().settings

    def reconnect(self) -> bool:
        """Read the connection again; if it changed (a rotated token, a moved host), use it from now on, and
        say so. Returns whether it changed."""
        try:
            conn = self.get_connection(self.atscale_conn_id)
        except AirflowNotFoundException:
            raise self._unknown_connection() from None
        return self._take(conn)

    async def areconnect(self) -> bool:
        """:meth:`reconnect` without blocking the event loop (for triggers)."""
        from airflow.providers.common.compat.connection import get_async_connection

        try:
            conn = await get_async_connection(self.atscale_conn_id, hook=type(self))
        except AirflowNotFoundException:
            raise self._unknown_connection() from None
        return self._take(conn)

    def _state(self) -> _calls.ServerState:
        if self._server is None:
            self.reconnect()
        return self._server  # type: ignore[return-value]

    async def _astate(self) -> _calls.ServerState:
        if self._server is None:
            await self.areconnect()
        return self._server  # type: ignore[return-value]

    def _take(self, conn: Any) -> bool:
        settings = ConnectionSettings.read(self.atscale_conn_id, conn)
        if self._server is not None and self._server.settings == settings:
            return False
        changed = self._server is not None
        if changed:
            log.warning(
                "Connection %r changed (now %s, auth_type %s): using it from now on",
                self.atscale_conn_id,
                settings.base_url,
                settings.auth_type,
            )
        for secret in settings.secrets:
            _mask_once(secret)
        self._server = _calls.ServerState(settings)
        return changed

    def _unknown_connection(self) -> AtScaleConfigurationError:
        return AtScaleConfigurationError(
            f"atscale_conn_id {self.atscale_conn_id!r} names no Airflow connection: create it under "
            f"Admin > Connections (type AtScale) or set AIRFLOW_CONN_{self.atscale_conn_id.upper()}"
        )

    # Sessions: requests on a worker, the event loop's shared aiohttp session on the triggerer

    def get_conn(self) -> requests.Session:
        """The hook's requests session, created on first use and reused for every sync call."""
        if self._http is None:
            import requests

            self._http = requests.Session()
            self._http.headers.update(_http.HEADERS)
        return self._http

    def close(self) -> None:
        """Close the requests session; the next call opens a new one."""
        if self._http is not None:
            self._http.close()
            self._http = None

    async def aget_conn(self) -> aiohttp.ClientSession:
        """
        The aiohttp session of the async calls: one per event loop and TLS setting, shared by every hook on
        the loop (a triggerer's triggers poll through one connection pool).
        """
        verify = (await self._astate()).settings.verify
        session = _http.open_session(verify)
        if verify not in self._async_verify:
            _http.hold_session(verify, 1)
            self._async_verify.append(verify)
        return session

    async def aclose(self) -> None:
        """Stop using the shared aiohttp sessions (the last hook to stop closes each)."""
        while self._async_verify:
            session = _http.hold_session(self._async_verify.pop(), -1)
            if session is not None:
                await session.close()

    def _run(self, flow: _http.Flow[T]) -> T:
        return _http.run(flow, self.get_conn(), self.settings)

    async def _arun(self, flow: _http.Flow[T]) -> T:
        if self._server is None or self._server.settings.verify not in self._async_verify:
            await self.aget_conn()  # counted in once, not on every poll
        return await _http.arun(flow, self.settings)

    # Calls with checked input

    def start_build(self, build: BuildRequest) -> AggregateBatch:
        """:meth:`trigger_aggregate_build` of a checked request."""
        try:
            return self._run(_calls.trigger_build(self._state(), build))
        except AtScaleNotFoundError as error:
            error.args = (f"{error} [{self._known_models(build.catalog_id)}]",)
            raise

    def read_batch(self, ref: BatchRef) -> AggregateBatch:
        """:meth:`get_aggregate_batch` of a checked reference."""
        return self._run(_calls.read_batch(self._state(), ref))

    async def aread_batch(self, ref: BatchRef) -> AggregateBatch:
        """:meth:`aget_aggregate_batch` of a checked reference."""
        return await self._arun(_calls.read_batch(await self._astate(), ref))

    def read_aggregates(self, ref: BatchRef) -> list[AggregateInstance]:
        """:meth:`list_batch_aggregates` of a checked reference."""
        from airflow_provider_atscale.hooks import _instances

        server = self._state()
        return self._run(_instances.list_instances(server, server.budget(), ref)).instances

    def find_build(
        self, build: BuildRequest, *, since: datetime, until: datetime | None = None
    ) -> AggregateBatch | None:
        """:meth:`find_running_batch` of a checked request."""
        return self._run(_calls.find_running_batch(self._state(), build, since=since, until=until))

    # The public calls

    def trigger_aggregate_build(
        self,
        catalog_id: str,
        model_id: str,
        *,
        full_build: bool | str,
        grace_period_overrides: Mapping[str, int | str] | str | None = None,
    ) -> AggregateBatch:
        """
        Start an aggregate build of one model, never two: after a failure that may have started one, batch
        history is checked before posting again.

        :param catalog_id: the catalog's id.
        :param model_id: the model's id.
        :param full_build: rebuild every aggregate, or build incrementally (``"true"``/``"false"`` too).
        :param grace_period_overrides: dataset name to grace period, for incremental builds only.
        :raises AtScaleConfigurationError: an argument is invalid; nothing was sent.
        :raises AtScaleNotFoundError: the catalog or model is unknown; the message lists the known ones.
        """
        return self.start_build(
            BuildRequest.parse(
                catalog_id=catalog_id,
                model_id=model_id,
                full_build=full_build,
                grace_period_overrides=grace_period_overrides,
            )
        )

    def get_aggregate_batch(self, catalog_id: str, model_id: str, batch_id: str) -> AggregateBatch:
        """
        A batch's current state, from the model's batch history (AtScale has no "get batch" endpoint; a
        private API that wants a JWT), else derived from the batch's aggregate instances.

        :param catalog_id: the catalog's id.
        :param model_id: the model's id.
        :param batch_id: the batch's id.
        """
        return self.read_batch(BatchRef.parse(catalog_id=catalog_id, model_id=model_id, batch_id=batch_id))

    async def aget_aggregate_batch(self, catalog_id: str, model_id: str, batch_id: str) -> AggregateBatch:
        """Async :meth:`get_aggregate_batch`, for triggers: never blocks the event loop."""
        return await self.aread_batch(
            BatchRef.parse(catalog_id=catalog_id, model_id=model_id, batch_id=batch_id)
        )

    def list_batch_aggregates(self, catalog_id: str, model_id: str, batch_id: str) -> list[AggregateInstance]:
        """
        The aggregate instances of a batch AtScale lists, with each one's status and AtScale's message.

        :param catalog_id: the catalog's id.
        :param model_id: the model's id.
        :param batch_id: the batch's id.
        """
        return self.read_aggregates(
            BatchRef.parse(catalog_id=catalog_id, model_id=model_id, batch_id=batch_id)
        )

    def find_running_batch(
        self,
        catalog_id: str,
        model_id: str,
        *,
        full_build: bool,
        created_since: datetime,
        created_until: datetime | None = None,
    ) -> AggregateBatch | None:
        """
        The newest aggregate build of this model and build type still running, created in a window (aware
        datetimes); ``None`` where there is none or where batch history cannot be read.
        """
        build = BuildRequest.parse(
            catalog_id=catalog_id, model_id=model_id, full_build=full_build, grace_period_overrides=None
        )
        return self.find_build(build, since=created_since, until=created_until)

    def list_catalogs(self) -> list[dict[str, Any]]:
        """The catalogs this token sees, each with its ``models``."""
        return self._run(_calls.list_catalogs(self._state()))

    def lookup_model(
        self,
        *,
        catalog_id: str | None = None,
        catalog_name: str | None = None,
        model_id: str | None = None,
        model_name: str | None = None,
    ) -> tuple[str, str]:
        """
        ``(catalog_id, model_id)`` of a model given by ids or names, exactly one of each pair. Names are
        looked up in ``GET /v1/catalogs`` as written, or in another case where only one matches; ids are
        returned as given, without a request where both are ids.

        :raises AtScaleConfigurationError: a pair gives neither or both, or a name matches none or several;
            the message lists the names that exist.
        """
        check_one_of("catalog_id", catalog_id, "catalog_name", catalog_name)
        check_one_of("model_id", model_id, "model_name", model_name)
        if catalog_name is None and model_name is None:
            return str(catalog_id), str(model_id)
        catalog_name = None if catalog_name is None else parse_name("catalog_name", catalog_name)
        model_name = None if model_name is None else parse_name("model_name", model_name)
        catalogs = self.list_catalogs()
        if catalog_name is not None:
            catalog = _named(catalogs, catalog_name, "catalog", "the catalogs this token sees")
        else:
            found = [c for c in catalogs if c.get("id") == catalog_id]
            if not found:
                raise AtScaleConfigurationError(
                    f"catalog_id {catalog_id!r} is not among the catalogs this token sees: "
                    f"{_listed(catalogs)}"
                )
            catalog = found[0]
        # Ids found in AtScale's answer become URL path segments too: checked like the caller's.
        found_catalog_id = parse_id("catalog_id", catalog.get("id"))
        if model_name is None:
            return found_catalog_id, str(model_id)
        where = f"the models of catalog {(catalog.get('name') or found_catalog_id)!r}"
        models = [m for m in catalog.get("models") or [] if isinstance(m, dict)]
        return found_catalog_id, parse_id("model_id", _named(models, model_name, "model", where).get("id"))

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection by listing catalogs, for the Test button of Airflow's connection form."""
        try:
            catalogs = self.list_catalogs()
        except AtScaleError as error:
            return False, str(error)
        return True, f"Connected to AtScale at {self.settings.base_url}: {len(catalogs)} catalog(s) visible"

    def _known_models(self, catalog_id: str) -> str:
        """A hint for a 404: the catalogs the token sees, or the models of the catalog asked for."""
        try:
            catalogs = self.list_catalogs()
        except AtScaleError:
            # The hint is a courtesy: the 404 itself is the error to report.
            return "the list of known catalogs could not be read"
        catalog = next((c for c in catalogs if c.get("id") == catalog_id), None)
        if catalog is None:
            return f"catalog {catalog_id} is not among the catalogs this token sees: {_listed(catalogs)}"
        models = [model for model in catalog.get("models") or [] if isinstance(model, dict)]
        return f"models of catalog {catalog_id}: {_listed(models)}"


def _named(items: list[dict[str, Any]], name: str, what: str, where: str) -> dict[str, Any]:
    """
    The one catalog or model called ``name``: written exactly so, or else written so in any case if only one
    is; anything else is an error listing the names that exist.
    """
    exact = [item for item in items if item.get("name") == name]
    if not exact:
        exact = [item for item in items if str(item.get("name", "")).casefold() == name.casefold()]
    if len(exact) == 1:
        return exact[0]
    if not exact:
        known = ", ".join(sorted(repr(str(item.get("name"))) for item in items)) or "none"
        raise AtScaleConfigurationError(f"no {what} named {name!r} among {where}: {known}")
    ids = ", ".join(str(item.get("id")) for item in exact)
    raise AtScaleConfigurationError(
        f"{len(exact)} {what}s are named {name!r} among {where} ({ids}): name it by {what}_id instead"
    )


def _listed(items: list[dict[str, Any]]) -> str:
    return ", ".join(f"{item.get('id')} ({item.get('name')})" for item in items) or "none"


_masked: set[str] = set()


def _mask_once(secret: str) -> None:
    """
    Register a secret with Airflow's masker once per process: registering costs milliseconds, and a triggerer
    builds a hook per waiting trigger, each with the same connection.
    """
    fingerprint = hashlib.sha256(secret.encode()).hexdigest()
    if fingerprint not in _masked:
        mask_secret(secret)
        _masked.add(fingerprint)

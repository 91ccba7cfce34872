"""The AtScale hook: the ``atscale`` connection, the token and every HTTP call to AtScale."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_atscale import __version__
from airflow_provider_atscale._compat import AirflowNotFoundException, BaseHook, mask_secret
from airflow_provider_atscale._flow import Flow, RawResponse, Send, adrive, drive
from airflow_provider_atscale._validation import (
    BatchRef,
    BuildRequest,
    check_one_of,
    validate_id,
    validate_name,
)
from airflow_provider_atscale.batches import AggregateBatch, AggregateInstance
from airflow_provider_atscale.errors import (
    AtScaleConfigurationError,
    AtScaleError,
    AtScaleNotFoundError,
)
from airflow_provider_atscale.hooks import _endpoints, _operations
from airflow_provider_atscale.hooks._form import with_connection_form
from airflow_provider_atscale.hooks._session import ApiSession
from airflow_provider_atscale.hooks._settings import ConnectionSettings

if TYPE_CHECKING:
    import ssl

    import aiohttp
    import requests

    from airflow_provider_atscale.hooks._async_transport import AsyncTransport

T = TypeVar("T")

USER_AGENT = f"airflow-provider-atscale/{__version__}"

log = logging.getLogger(__name__)


@with_connection_form
class AtScaleHook(BaseHook):
    """
    Talk to AtScale's engine API through an ``atscale`` Airflow connection.

    The connection's ``host`` is AtScale's base URL (``https://atscale.example.com``; no scheme means
    https; a path after the host is kept, for servers behind a proxy prefix), ``port`` overrides the URL's
    port, and ``password`` holds the API token (or the user's password with ``auth_type`` ``password``).
    Extras: ``verify`` (true, false or a CA bundle path; default true), ``timeout`` (seconds per request;
    default 30), ``auth_type`` (``token``, ``token_exchange`` or ``password``), ``client_id``,
    ``client_secret`` and ``realm`` (password grant), ``max_retries`` and ``retry_max_wait``.

    One HTTP session is opened per hook and reused for every call; every request has a timeout. Failures
    that may pass are retried within one budget per call (see ``hooks/_session.py``); a 401 makes the hook
    authenticate again, once.

    :param atscale_conn_id: the Airflow connection id.
    """

    conn_name_attr = "atscale_conn_id"
    default_conn_name = "atscale_default"
    conn_type = "atscale"
    hook_name = "AtScale"

    def __init__(self, atscale_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.atscale_conn_id = atscale_conn_id
        self._session: requests.Session | None = None
        self._async: AsyncTransport | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(atscale_conn_id={self.atscale_conn_id!r})"

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The connection's checked settings, read once per hook."""
        try:
            conn = self.get_connection(self.atscale_conn_id)
        except AirflowNotFoundException:
            raise self._unknown_connection_error() from None
        return self._read_settings(conn)

    async def aget_settings(self) -> ConnectionSettings:
        """
        The connection's settings, fetched without blocking the event loop (for triggers).

        Uses Airflow's async connection API, as the triggerer requires; the result is shared with
        :attr:`settings`. A triggerer builds a hook for each waiting trigger, and asking Airflow for the
        connection costs a round trip each time: the settings read for one hook serve the hooks of the same
        connection that start within :data:`ASYNC_SETTINGS_REUSE_SECONDS` after it (as Airflow's own
        ``[secrets] use_cache`` does for DAG parsing, for longer).
        """
        if "settings" not in self.__dict__:
            recent = _recent_settings.get(self.atscale_conn_id)
            if recent is not None and time.monotonic() - recent[0] < ASYNC_SETTINGS_REUSE_SECONDS:
                self.__dict__["settings"] = recent[1]
                return recent[1]
            try:
                conn = await self.aget_connection(self.atscale_conn_id)
            except AirflowNotFoundException:
                raise self._unknown_connection_error() from None
            settings = self.__dict__["settings"] = self._read_settings(conn)
            _recent_settings[self.atscale_conn_id] = (time.monotonic(), settings)
        return self.settings

    def _read_settings(self, conn: Any) -> ConnectionSettings:
        settings = ConnectionSettings.from_connection(self.atscale_conn_id, conn)
        for secret in settings.secrets:
            _mask_once(secret)
        return settings

    @cached_property
    def session(self) -> ApiSession:
        """The connection's tokens and what the server was found to serve, kept across this hook's calls."""
        return ApiSession(self.settings)

    async def asession(self) -> ApiSession:
        """:attr:`session`, the connection read without blocking the event loop (for triggers)."""
        await self.aget_settings()
        return self.session

    def _unknown_connection_error(self) -> AtScaleConfigurationError:
        return AtScaleConfigurationError(
            f"atscale_conn_id {self.atscale_conn_id!r} names no Airflow connection: create it under "
            f"Admin > Connections (type AtScale) or set AIRFLOW_CONN_{self.atscale_conn_id.upper()}"
        )

    def get_conn(self) -> requests.Session:
        """The hook's HTTP session, created on first use and reused for every call."""
        if self._session is None:
            import requests

            session = requests.Session()
            session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
            self._session = session
        return self._session

    def close(self) -> None:
        """Close the HTTP session; the next call opens a new one."""
        if self._session is not None:
            self._session.close()
            self._session = None

    async def aget_conn(self) -> aiohttp.ClientSession:
        """
        The aiohttp session of the async calls: one per event loop and TLS setting, shared by every hook on
        the loop (a triggerer's triggers poll through one connection pool; see ``hooks/_async_transport.py``).
        """
        return (await self._async_transport()).session()

    async def aclose(self) -> None:
        """Stop using the shared async session (the last hook to stop closes it)."""
        if self._async is not None:
            await self._async.close()
            self._async = None

    async def _async_transport(self) -> AsyncTransport:
        if self._async is None:
            from airflow_provider_atscale.hooks._async_transport import AsyncTransport

            settings = await self.aget_settings()
            self._async = AsyncTransport(
                settings.base_url,
                settings.timeout,
                _ssl_context(settings.verify),
                {"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
        return self._async

    def trigger_aggregate_build(
        self,
        catalog_id: str,
        model_id: str,
        *,
        full_build: bool | str,
        grace_period_overrides: Mapping[str, int | str] | str | None = None,
    ) -> AggregateBatch:
        """
        Start an aggregate build of one model.

        The arguments are checked with the operator's rules (:meth:`BuildRequest.checked`) before any request.
        A failure after which AtScale may have started the build is checked in batch history before the
        build is posted again (see :func:`~._operations.trigger_aggregate_build`).

        :param catalog_id: the catalog's id.
        :param model_id: the model's id.
        :param full_build: rebuild every aggregate (``True``) or build incrementally (``False``); the
            strings ``"true"`` and ``"false"`` are read as such.
        :param grace_period_overrides: dataset name to grace period, for incremental builds only.
        :return: the new batch, as AtScale answered.
        :raises AtScaleConfigurationError: an argument is invalid; nothing was sent.
        :raises AtScaleNotFoundError: the catalog or model is unknown; the message lists the known ones.
        """
        build = BuildRequest.checked(
            catalog_id=catalog_id,
            model_id=model_id,
            full_build=full_build,
            grace_period_overrides=grace_period_overrides,
        )
        try:
            return self._run(_operations.trigger_aggregate_build(self.session.begin(), build))
        except AtScaleNotFoundError as error:
            raise type(error)(
                f"{error} [{self._known_models_hint(build.catalog_id)}]",
                method=error.method,
                path=error.path,
                status_code=error.http_status,
                atscale_message=error.atscale_message,
            ) from None

    def get_aggregate_batch(self, catalog_id: str, model_id: str, batch_id: str) -> AggregateBatch:
        """
        A batch's current state.

        AtScale has no documented "get batch" endpoint. The batch is looked up in the model's batch history
        (newest first, at most 500 batches), a private API that wants a JWT: in ``token`` mode the API token
        is exchanged for one. Where the server refuses history (an HTTP 4xx, for history or for the JWT),
        and whenever reading it fails, the state is derived from the batch's aggregate instances instead:
        any failed or invalid is ``failed``, all built ``done`` (only from a listing known to be complete),
        otherwise ``inprogress``. The hook remembers a refusal and says so once.

        :param catalog_id: the catalog's id.
        :param model_id: the model's id.
        :param batch_id: the batch's id.
        """
        ref = BatchRef.checked(catalog_id=catalog_id, model_id=model_id, batch_id=batch_id)
        return self._run(_operations.get_aggregate_batch(self.session.begin(), ref))

    async def aget_aggregate_batch(self, catalog_id: str, model_id: str, batch_id: str) -> AggregateBatch:
        """Async :meth:`get_aggregate_batch`, for triggers: never blocks the event loop."""
        ref = BatchRef.checked(catalog_id=catalog_id, model_id=model_id, batch_id=batch_id)
        session = await self.asession()
        return await self._arun(_operations.get_aggregate_batch(session.begin(), ref))

    def list_batch_aggregates(self, catalog_id: str, model_id: str, batch_id: str) -> list[AggregateInstance]:
        """
        The aggregate instances of a batch AtScale lists, with each one's status and AtScale's message.

        The instances endpoint documents no paging; a server that truncates its answers lists only some.

        :param catalog_id: the catalog's id.
        :param model_id: the model's id.
        :param batch_id: the batch's id.
        """
        ref = BatchRef.checked(catalog_id=catalog_id, model_id=model_id, batch_id=batch_id)
        return self._run(_operations.list_aggregate_instances(self.session.begin(), ref)).instances

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
        The newest aggregate build of this model and build type still in progress, created in a window.

        Only batches of ``batchType`` ``aggregate_batch`` count. Returns ``None`` where there is none or
        where batch history cannot be read.

        :param catalog_id: the catalog's id.
        :param model_id: the model's id.
        :param full_build: the build type to match.
        :param created_since: only batches created at or after this aware datetime count.
        :param created_until: only batches created at or before this aware datetime count.
        """
        build = BuildRequest.checked(
            catalog_id=catalog_id, model_id=model_id, full_build=full_build, grace_period_overrides=None
        )
        return self._run(
            _operations.find_running_batch(
                self.session.begin(), build, since=created_since, until=created_until
            )
        )

    def list_catalogs(self) -> list[dict[str, Any]]:
        """The catalogs this token sees, each with its ``models``."""
        return self._run(_operations.list_catalogs(self.session.begin()))

    def lookup_model(
        self,
        *,
        catalog_id: str | None = None,
        catalog_name: str | None = None,
        model_id: str | None = None,
        model_name: str | None = None,
    ) -> tuple[str, str]:
        """
        The ids of a catalog and model given by id or by name: exactly one of each pair.

        Names are looked up in ``GET /v1/catalogs`` (``name`` as written in AtScale; a name written in
        another case is taken only where exactly one catalog or model has it). Ids are returned as given,
        with no request where both are ids.

        :param catalog_id: the catalog's id.
        :param catalog_name: the catalog's name, e.g. ``Sales Insights``.
        :param model_id: the model's id.
        :param model_name: the model's name, e.g. ``Internet Sales``.
        :return: ``(catalog_id, model_id)``.
        :raises AtScaleConfigurationError: a pair gives neither or both, or a name matches no catalog or
            model, or several; the message lists the names that exist.
        """
        check_one_of("catalog_id", catalog_id, "catalog_name", catalog_name)
        check_one_of("model_id", model_id, "model_name", model_name)
        for field, value in (("catalog_name", catalog_name), ("model_name", model_name)):
            if value is not None:
                validate_name(field, value)
        for field, value in (("catalog_id", catalog_id), ("model_id", model_id)):
            if value is not None:
                validate_id(field, value)
        if catalog_name is None and model_name is None:
            return str(catalog_id), str(model_id)
        catalogs = self.list_catalogs()
        if catalog_name is not None:
            catalog = _endpoints.find_named(catalogs, catalog_name, "catalog", "the catalogs this token sees")
        else:
            found = [c for c in catalogs if c.get("id") == catalog_id]
            if not found:
                raise AtScaleConfigurationError(
                    f"catalog_id {catalog_id!r} is not among the catalogs this token sees: "
                    + _endpoints.describe_catalogs(catalogs)
                )
            catalog = found[0]
        found_catalog_id = validate_id("catalog_id", catalog.get("id"))
        if model_name is None:
            return found_catalog_id, validate_id("model_id", model_id)
        where = f"the models of catalog {(catalog.get('name') or found_catalog_id)!r}"
        models = [m for m in catalog.get("models") or [] if isinstance(m, dict)]
        model = _endpoints.find_named(models, model_name, "model", where)
        return found_catalog_id, validate_id("model_id", model.get("id"))

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection by listing catalogs, for the Test button of Airflow's connection form."""
        try:
            catalogs = self.list_catalogs()
        except AtScaleError as error:
            return False, str(error)
        return True, f"Connected to AtScale at {self.settings.base_url}: {len(catalogs)} catalog(s) visible"

    def _known_models_hint(self, catalog_id: str) -> str:
        try:
            return _endpoints.describe_known_models(self.list_catalogs(), catalog_id)
        except AtScaleError:
            # The hint is a courtesy: the 404 itself is the error to report.
            return "the list of known catalogs could not be read"

    def _run(self, flow: Flow[T]) -> T:
        """Drive a flow with the sync transport (requests)."""
        return drive(flow, self._send)

    async def _arun(self, flow: Flow[T]) -> T:
        """Drive a flow with the async transport (aiohttp)."""
        return await adrive(flow, self._asend)

    def _send(self, send: Send) -> RawResponse:
        """Send one request with requests; no retries here (the flow decides)."""
        import requests

        request, settings = send.request, self.settings
        try:
            response = self.get_conn().request(
                request.method,
                settings.base_url + request.path,
                params=dict(request.params),
                json=request.json_body,
                data=dict(request.form) if request.form is not None else None,
                headers=dict(send.headers),
                timeout=settings.timeout,
                # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE override session.verify.
                verify=settings.verify,
            )
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as error:
            raise request.no_answer(settings.base_url, error, opened=_connection_opened(error)) from error
        except requests.RequestException as error:
            raise request.no_answer(settings.base_url, error, opened=True) from error
        log.debug("AtScale %s %s answered HTTP %s", request.method, request.path, response.status_code)
        return RawResponse(
            response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content
        )

    async def _asend(self, send: Send) -> RawResponse:
        """Send one request with aiohttp; same contract as :meth:`_send`."""
        transport = self._async or await self._async_transport()
        return await transport.send(send)


def _connection_opened(error: BaseException) -> bool:
    """Whether requests had opened a connection before failing (if not, the server surely saw nothing)."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (requests.ConnectTimeout, NewConnectionError, ConnectTimeoutError)):
            return False
        reason = getattr(current, "reason", None)
        pending.extend(
            [reason if isinstance(reason, BaseException) else None, current.__cause__, current.__context__]
        )
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return True


ASYNC_SETTINGS_REUSE_SECONDS = 30.0
"""How long the connection settings one async hook read serve new async hooks of the same connection."""
_recent_settings: dict[str, tuple[float, ConnectionSettings]] = {}


def forget_settings() -> None:
    """Forget the connection settings async hooks reuse (the next async hook asks Airflow again)."""
    _recent_settings.clear()


_masked: set[str] = set()


def _mask_once(secret: str) -> None:
    """
    Register a secret with Airflow's masker once per process: registering costs milliseconds, and a
    triggerer builds a hook per waiting trigger, each with the same connection.
    """
    fingerprint = hashlib.sha256(secret.encode()).hexdigest()
    if fingerprint not in _masked:
        mask_secret(secret)
        _masked.add(fingerprint)


@lru_cache(maxsize=8)
def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    # One TLS context per setting for the whole process: building one loads the CA bundle (hundreds of
    # KB), too much to repeat for each of thousands of waiting triggers; it is also the key of the shared
    # async session.
    import ssl

    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    import certifi

    # certifi's bundle, as requests uses on workers: both transports trust the same authorities.
    context = ssl.create_default_context(cafile=certifi.where())
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context

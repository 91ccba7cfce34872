"""Configuration of the emulator: catalogs, models, users, tokens and faults, as frozen data classes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_CATALOG_ID = "fdcdd3e1-13fc-54c2-93fe-57e681e1968e"
DEFAULT_MODEL_ID = "0b44a9eb-8aa1-5aaa-8141-6d80ae5ce3bf"
FAILING_MODEL_ID = "8f37d9fd-6fa7-5d83-96b9-84a0e17ddda3"
SECOND_MODEL_ID = "c66d5407-9e52-5516-8ac5-114d82a00a76"
# Its batches materialize more aggregates than one answer of the instances endpoint lists.
WIDE_MODEL_ID = "942770b2-47e5-5fc1-915a-64c13d20d46a"

DEMO_TOKEN = "atscale-emulator-demo-token"
DEFAULT_USERNAME = "admin"
DEFAULT_PASSWORD = "admin-password"
# The identity broker's public client: the password grant needs no client secret for it.
DEFAULT_CLIENT_ID = "atscale-ai-link"
MODELER_CLIENT_ID = "atscale-modeler"
PUBLIC_API_CLIENT_ID = "atscale-public-api"
DEFAULT_MODELER_CLIENT_SECRET = "atscale-emulator-modeler-secret"
DEFAULT_PUBLIC_API_CLIENT_SECRET = "atscale-emulator-public-api-secret"
DEFAULT_CONNECTION_ID = "snowflake-warehouse"
DEFAULT_TABLE_SCHEMA = "atscale_aggs"

DEFAULT_QUEUE_SECONDS = 1.0
DEFAULT_BUILD_SECONDS = 5.0
DEFAULT_TOKEN_TTL_SECONDS = 300.0
DEFAULT_REFRESH_TOKEN_TTL_SECONDS = 1800.0
# What a sibling of the instances endpoint was seen to answer on a live host, whatever page size was asked.
DEFAULT_INSTANCES_ROW_LIMIT = 10

DropMode = Literal["close", "truncate"]
DROP_MODES: tuple[DropMode, ...] = ("close", "truncate")


@dataclass(frozen=True)
class AggregateDefinition:
    """
    An aggregate table that a batch materializes.

    :param id: Definition id, reported as ``definitionId`` by the instances endpoint.
    :param table_name: Name of the aggregate table, e.g. ``as_agg_internet_sales_by_day``.
    :param number_of_rows: Row count reported once the aggregate is active.
    :param failure_message: Message of the ``invalid`` instance when the model is configured to fail.
        Ignored for models that build fine.
    """

    id: str
    table_name: str
    number_of_rows: int = 1000
    failure_message: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """
    A model and how its batches behave.

    :param id: Model id (a UUID string).
    :param name: Model name.
    :param aggregates: Aggregates every batch of this model materializes, one after the other.
    :param caption: Display name; defaults to ``name``.
    :param queue_seconds: Seconds from ``new`` to ``inprogress``; ``None`` uses the emulator default.
    :param build_seconds: Seconds from ``inprogress`` to finished; ``None`` uses the emulator default.
    :param fail: Whether batches of this model end ``failed``. Aggregates with a ``failure_message``
        become ``invalid`` with that message; when none has one, every aggregate fails with a generic message.
    :param final_status: The status batches end in instead of ``done``/``failed``, e.g. ``cancelled``, or
        one outside AtScale's vocabulary, to see how a client treats a status it does not know.
    :param table_schema: Schema reported for the aggregate tables.
    :param connection_id: Data warehouse connection id reported for the aggregate tables.
    """

    id: str
    name: str
    aggregates: tuple[AggregateDefinition, ...] = ()
    caption: str | None = None
    queue_seconds: float | None = None
    build_seconds: float | None = None
    fail: bool = False
    final_status: str | None = None
    table_schema: str = DEFAULT_TABLE_SCHEMA
    connection_id: str = DEFAULT_CONNECTION_ID

    def __post_init__(self) -> None:
        for name in ("queue_seconds", "build_seconds"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ModelConfig.{name} must be a non-negative number, got {value!r}")


@dataclass(frozen=True)
class CatalogConfig:
    """
    A published catalog and its models.

    :param id: Catalog id (a UUID string).
    :param name: Catalog name.
    :param models: Models of the catalog.
    :param caption: Display name; defaults to ``name``.
    :param published_at: Value of ``publishedAt`` in ``GET /v1/catalogs``.
    :param published_by: Value of ``publishedBy`` in ``GET /v1/catalogs``.
    """

    id: str
    name: str
    models: tuple[ModelConfig, ...] = ()
    caption: str | None = None
    published_at: str = "2025-01-15T10:00:00.000Z"
    published_by: str = DEFAULT_USERNAME


@dataclass(frozen=True)
class UserConfig:
    """
    A user accepted by the password grant of the identity broker endpoint.

    :param username: Login name.
    :param password: Password in clear text (this is an emulator).
    """

    username: str
    password: str


@dataclass(frozen=True)
class ClientConfig:
    """
    An OAuth client of the identity broker endpoint.

    :param id: Client id, sent as ``client_id``.
    :param secret: Secret a confidential client must send as ``client_secret``; ``None`` for a public client,
        which sends none.
    """

    id: str
    secret: str | None = None


def default_clients() -> tuple[ClientConfig, ...]:
    """Return the clients of a real identity broker: one public client and two confidential ones."""
    return (
        ClientConfig(DEFAULT_CLIENT_ID),
        ClientConfig(MODELER_CLIENT_ID, DEFAULT_MODELER_CLIENT_SECRET),
        ClientConfig(PUBLIC_API_CLIENT_ID, DEFAULT_PUBLIC_API_CLIENT_SECRET),
    )


@dataclass(frozen=True)
class FaultConfig:
    """
    Faults injected into API requests (never into the ``/_emulator`` control endpoints).

    One random draw per request picks at most one fault; the rates are probabilities in ``[0, 1]`` and
    their sum must not exceed 1. The generator is ``random.Random(seed)``, reset whenever a fault
    configuration is applied, so the same sequence of requests meets the same faults.

    :param seed: Seed of the random generator.
    :param rate_503: Answer 503 without processing the request.
    :param rate_429: Answer 429 with a ``Retry-After`` header without processing the request.
    :param retry_after: Seconds announced in ``Retry-After``.
    :param retry_after_http_date: Send ``Retry-After`` as an HTTP date instead of seconds.
    :param rate_500: Process the request (a batch may be created) and then answer 500 anyway.
    :param rate_drop_before: Drop the connection without processing the request.
    :param rate_drop_after: Process the request, then drop the connection without a complete response.
    :param drop_mode: How a connection is dropped: ``"close"`` closes it before any byte of a response
        is sent; ``"truncate"`` sends the status line, headers and part of the body, then closes.
    :param latency_seconds: Delay added before every API request is handled.
    :param rate_slow: Delay this share of requests by ``slow_seconds``, then answer them normally.
    :param slow_seconds: The delay of a slow request.
    :param token_ttl_seconds: Lifetime of access tokens issued by the token endpoints from now on.
    :param clock_offset_seconds: How far AtScale's clock runs ahead of the caller's (negative: behind).
        Every timestamp the emulator writes is shifted by it (batch and instance dates, token ``iat`` and
        ``exp``, the ``Date`` and ``Retry-After`` headers); batches still progress with the emulator's clock.
    """

    seed: int = 0
    rate_503: float = 0.0
    rate_429: float = 0.0
    retry_after: int = 1
    retry_after_http_date: bool = False
    rate_500: float = 0.0
    rate_drop_before: float = 0.0
    rate_drop_after: float = 0.0
    drop_mode: DropMode = "close"
    latency_seconds: float = 0.0
    rate_slow: float = 0.0
    slow_seconds: float = 0.5
    token_ttl_seconds: float = DEFAULT_TOKEN_TTL_SECONDS
    clock_offset_seconds: float = 0.0

    def __post_init__(self) -> None:
        rates = {
            "rate_503": self.rate_503,
            "rate_429": self.rate_429,
            "rate_500": self.rate_500,
            "rate_drop_before": self.rate_drop_before,
            "rate_drop_after": self.rate_drop_after,
            "rate_slow": self.rate_slow,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"FaultConfig.{name} must be between 0 and 1, got {rate!r}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"FaultConfig rates must not add up to more than 1, got {rates}")
        if self.retry_after < 0:
            raise ValueError(f"FaultConfig.retry_after must be >= 0, got {self.retry_after!r}")
        if not (math.isfinite(self.slow_seconds) and self.slow_seconds >= 0):
            raise ValueError(f"FaultConfig.slow_seconds must be >= 0, got {self.slow_seconds!r}")
        if not (math.isfinite(self.latency_seconds) and self.latency_seconds >= 0):
            raise ValueError(f"FaultConfig.latency_seconds must be >= 0, got {self.latency_seconds!r}")
        if not (math.isfinite(self.token_ttl_seconds) and self.token_ttl_seconds > 0):
            raise ValueError(f"FaultConfig.token_ttl_seconds must be > 0, got {self.token_ttl_seconds!r}")
        if self.drop_mode not in DROP_MODES:
            raise ValueError(f"FaultConfig.drop_mode must be one of {DROP_MODES}, got {self.drop_mode!r}")
        if not math.isfinite(self.clock_offset_seconds):
            raise ValueError(
                f"FaultConfig.clock_offset_seconds must be a finite number, got {self.clock_offset_seconds!r}"
            )


def default_catalogs() -> tuple[CatalogConfig, ...]:
    """
    Return the default catalog: a good model, a failing model, a second good model and a good model with
    more aggregates than one answer of the instances endpoint lists.
    """
    internet_sales = ModelConfig(
        id=DEFAULT_MODEL_ID,
        name="Internet Sales",
        aggregates=(
            AggregateDefinition("18655da6-9977-5b69-9bfd-3ee5c9306093", "as_agg_internet_sales_by_day", 1826),
            AggregateDefinition(
                "e91814ac-81ad-5539-899d-16b579a34ab8", "as_agg_internet_sales_by_product", 158
            ),
            AggregateDefinition(
                "30be1f40-48fe-5375-b122-641eb6b84080", "as_agg_internet_sales_by_customer_geo", 18484
            ),
        ),
    )
    failing = ModelConfig(
        id=FAILING_MODEL_ID,
        name="Internet Sales (broken grants)",
        fail=True,
        aggregates=(
            AggregateDefinition("bb982a62-4592-5f1b-b4f8-27472f1703e7", "as_agg_broken_sales_by_day", 1826),
            AggregateDefinition(
                "59d2a7f1-06ab-590b-ad9e-a80492c8e9ee",
                "as_agg_broken_sales_by_product",
                failure_message=(
                    "Table 'as_agg_broken_sales_by_product' could not be created: "
                    "permission denied on schema 'atscale_aggs'"
                ),
            ),
            AggregateDefinition(
                "a3258fdc-d879-56a5-81dc-9e21b357501c",
                "as_agg_broken_sales_by_promotion",
                failure_message=(
                    "Table 'as_agg_broken_sales_by_promotion' could not be populated: "
                    "SQL compilation error: invalid identifier 'PROMOTIONKEY'"
                ),
            ),
        ),
    )
    reseller_sales = ModelConfig(
        id=SECOND_MODEL_ID,
        name="Reseller Sales",
        aggregates=(
            AggregateDefinition("325a8ed7-174e-5114-8dd2-48740a5a7a8b", "as_agg_reseller_sales_by_month", 60),
            AggregateDefinition(
                "09731272-99cb-5f4d-84ff-efe9e2903942", "as_agg_reseller_sales_by_reseller", 701
            ),
            AggregateDefinition(
                "7f24da43-3258-571c-8e59-122331ad2153", "as_agg_reseller_sales_by_employee", 17
            ),
        ),
    )
    sales_detail = ModelConfig(
        id=WIDE_MODEL_ID,
        name="Internet Sales Detail",
        aggregates=(
            AggregateDefinition("6faef89c-dfeb-5fa6-8c7c-1e083c6884cd", "as_agg_sales_detail_by_day", 1826),
            AggregateDefinition("d6572166-e445-5d74-bca6-49da5aba2329", "as_agg_sales_detail_by_week", 261),
            AggregateDefinition("1939581d-8f6e-5803-85ad-789dcfd3a434", "as_agg_sales_detail_by_month", 60),
            AggregateDefinition("c4353c2d-720b-5ed8-a8b8-3d2279ffc91c", "as_agg_sales_detail_by_quarter", 20),
            AggregateDefinition("76f75554-5005-5d63-b06f-a2092f80018a", "as_agg_sales_detail_by_year", 5),
            AggregateDefinition(
                "aa0ed1f5-b415-594c-9ea7-b36aab707604", "as_agg_sales_detail_by_product", 606
            ),
            AggregateDefinition(
                "572f7281-be5a-535c-a709-af0d0f297791", "as_agg_sales_detail_by_product_category", 4
            ),
            AggregateDefinition(
                "abb81802-839f-5848-bdda-4cf8e18f0ceb", "as_agg_sales_detail_by_product_subcategory", 37
            ),
            AggregateDefinition(
                "230b6063-77c6-5e86-ae29-033870d86c65", "as_agg_sales_detail_by_customer", 18484
            ),
            AggregateDefinition(
                "096825b8-6607-505f-b1d3-edab64f68d94", "as_agg_sales_detail_by_customer_geo", 655
            ),
            AggregateDefinition(
                "31e12d82-e414-5908-a3cc-9e1e9a3f8bb2", "as_agg_sales_detail_by_promotion", 16
            ),
            AggregateDefinition(
                "0f4bd1f9-1a6d-54e3-94fc-f5fe9dd65014", "as_agg_sales_detail_by_currency", 105
            ),
            AggregateDefinition(
                "6ee880da-ee80-5bb7-b9ff-944495586f09", "as_agg_sales_detail_by_sales_territory", 11
            ),
            AggregateDefinition(
                "7aa2420f-188e-59ec-84ca-b5559d3fabf2", "as_agg_sales_detail_by_ship_date", 1826
            ),
        ),
    )
    return (
        CatalogConfig(
            id=DEFAULT_CATALOG_ID,
            name="Sales Insights",
            models=(internet_sales, failing, reseller_sales, sales_detail),
        ),
    )


@dataclass(frozen=True)
class EmulatorConfig:
    """
    Everything the emulator serves. The defaults refuse what the real AtScale refuses.

    :param catalogs: Catalogs and their models.
    :param api_tokens: API tokens accepted as ``Authorization: Bearer <token>`` by the public ``/v1`` API.
    :param users: Users accepted by the password grant.
    :param clients: OAuth clients the identity broker endpoint knows.
    :param refresh_token_ttl_seconds: Lifetime of refresh tokens issued by the password grant.
    :param default_queue_seconds: Seconds from ``new`` to ``inprogress`` for models that do not say.
    :param default_build_seconds: Seconds from ``inprogress`` to finished for models that do not say.
    :param serve_batch_history: Serve the Design Center's batch history; when false it answers 403 to
        everyone, as a server or role that refuses it does, so clients must follow batches through the
        instances endpoint.
    :param batch_history_accepts_api_tokens: Let batch history accept raw API tokens besides JWTs, as no real
        server is known to do.
    :param history_includes_other_batches: With each aggregate batch, add to batch history a batch of
        another type for the same model that is newer and still running, as real histories hold.
    :param instances_row_limit: Most rows one answer of the instances endpoint lists, whatever page or size
        is asked; ``None`` lists every row.
    :param faults: Faults in effect when the emulator starts, including the access token lifetime and the
        clock offset.
    """

    catalogs: tuple[CatalogConfig, ...] = field(default_factory=default_catalogs)
    api_tokens: tuple[str, ...] = (DEMO_TOKEN,)
    users: tuple[UserConfig, ...] = (UserConfig(DEFAULT_USERNAME, DEFAULT_PASSWORD),)
    clients: tuple[ClientConfig, ...] = field(default_factory=default_clients)
    refresh_token_ttl_seconds: float = DEFAULT_REFRESH_TOKEN_TTL_SECONDS
    default_queue_seconds: float = DEFAULT_QUEUE_SECONDS
    default_build_seconds: float = DEFAULT_BUILD_SECONDS
    serve_batch_history: bool = True
    batch_history_accepts_api_tokens: bool = False
    history_includes_other_batches: bool = True
    instances_row_limit: int | None = DEFAULT_INSTANCES_ROW_LIMIT
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        catalog_ids = [catalog.id for catalog in self.catalogs]
        if len(set(catalog_ids)) != len(catalog_ids):
            raise ValueError(f"Catalog ids must be unique, got {catalog_ids}")
        for catalog in self.catalogs:
            model_ids = [model.id for model in catalog.models]
            if len(set(model_ids)) != len(model_ids):
                raise ValueError(f"Model ids must be unique within catalog {catalog.id!r}, got {model_ids}")
        client_ids = [client.id for client in self.clients]
        if len(set(client_ids)) != len(client_ids):
            raise ValueError(f"Client ids must be unique, got {client_ids}")
        for name in ("default_queue_seconds", "default_build_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"EmulatorConfig.{name} must be a non-negative number, got {value!r}")
        if not self.refresh_token_ttl_seconds > 0:
            raise ValueError("EmulatorConfig.refresh_token_ttl_seconds must be > 0")
        if self.instances_row_limit is not None and self.instances_row_limit < 1:
            raise ValueError(
                f"EmulatorConfig.instances_row_limit must be None or >= 1, got {self.instances_row_limit!r}"
            )

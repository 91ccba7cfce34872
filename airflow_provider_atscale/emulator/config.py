"""What the emulator serves: catalogs, models, API tokens and faults, as frozen data classes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

DEFAULT_CATALOG_ID = "fdcdd3e1-13fc-54c2-93fe-57e681e1968e"
DEFAULT_MODEL_ID = "0b44a9eb-8aa1-5aaa-8141-6d80ae5ce3bf"
FAILING_MODEL_ID = "8f37d9fd-6fa7-5d83-96b9-84a0e17ddda3"
SECOND_MODEL_ID = "c66d5407-9e52-5516-8ac5-114d82a00a76"
# Its batches materialize more aggregates than one answer of the instances endpoint lists.
WIDE_MODEL_ID = "942770b2-47e5-5fc1-915a-64c13d20d46a"

DEMO_TOKEN = "atscale-emulator-demo-token"
DEFAULT_USERNAME = "admin"
DEFAULT_PASSWORD = "admin-password"
# The identity broker's public client, which sends no secret, and one confidential client, which must.
DEFAULT_CLIENT_ID = "atscale-ai-link"
PUBLIC_API_CLIENT_ID = "atscale-public-api"
DEFAULT_PUBLIC_API_CLIENT_SECRET = "atscale-emulator-public-api-secret"
CLIENT_SECRETS: dict[str, str | None] = {
    DEFAULT_CLIENT_ID: None,
    PUBLIC_API_CLIENT_ID: DEFAULT_PUBLIC_API_CLIENT_SECRET,
}

DEFAULT_QUEUE_SECONDS = 1.0
DEFAULT_BUILD_SECONDS = 5.0
DEFAULT_TOKEN_TTL_SECONDS = 300.0
REFRESH_TOKEN_TTL_SECONDS = 1800.0
# What a sibling of the instances endpoint was seen to answer on a live host, whatever page size was asked.
DEFAULT_INSTANCES_ROW_LIMIT = 10


def _require(owner: object, name: str, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"{type(owner).__name__}.{name} must be {rule}, got {getattr(owner, name)!r}")


def _check_seconds(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        _require(owner, name, value is None or (math.isfinite(value) and value >= 0), "a non-negative number")


@dataclass(frozen=True)
class AggregateDefinition:
    """
    An aggregate table that a batch materializes.

    :param id: Definition id, reported as ``definitionId`` by the instances endpoint.
    :param table_name: Name of the aggregate table, e.g. ``as_agg_internet_sales_by_day``.
    :param number_of_rows: Row count reported once the aggregate is active.
    :param failure_message: Message of the ``invalid`` instance when the model fails.
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
    :param queue_seconds: Seconds from ``new`` to ``inprogress``; ``None`` uses the emulator default.
    :param build_seconds: Seconds from ``inprogress`` to finished; ``None`` uses the emulator default.
    :param fail: Whether batches end ``failed``: aggregates with a ``failure_message`` become ``invalid``
        with it; when none has one, every aggregate fails with a generic message.
    :param final_status: The status batches end in instead of ``done``/``failed``, e.g. ``cancelled``, or
        one outside AtScale's vocabulary.
    """

    id: str
    name: str
    aggregates: tuple[AggregateDefinition, ...] = ()
    queue_seconds: float | None = None
    build_seconds: float | None = None
    fail: bool = False
    final_status: str | None = None

    def __post_init__(self) -> None:
        _check_seconds(self, "queue_seconds", "build_seconds")


@dataclass(frozen=True)
class CatalogConfig:
    """
    A published catalog and its models.

    :param id: Catalog id (a UUID string).
    :param name: Catalog name.
    :param models: Models of the catalog.
    """

    id: str
    name: str
    models: tuple[ModelConfig, ...] = ()


@dataclass(frozen=True)
class FaultConfig:
    """
    Faults injected into API requests (never into the ``/_emulator`` control routes).

    One draw of ``random.Random(seed)`` per request picks at most one fault; the rates are probabilities
    and add up to at most 1. Applying a configuration restarts the sequence, so the same requests meet the
    same faults.

    :param seed: Seed of the random generator.
    :param rate_503: Answer 503 without processing the request.
    :param rate_429: Answer 429 with a ``Retry-After`` header without processing the request.
    :param retry_after: Seconds announced in ``Retry-After``.
    :param retry_after_http_date: Send ``Retry-After`` as an HTTP date instead of seconds.
    :param rate_500: Process the request (a batch may be created), then answer 500 anyway.
    :param rate_drop_before: Close the connection without processing the request or answering.
    :param rate_drop_after: Process the request, then close the connection without answering.
    :param latency_seconds: Delay added before every API request is handled.
    :param rate_slow: Delay this share of requests by ``slow_seconds``, then answer them normally.
    :param slow_seconds: The delay of a slow request.
    :param token_ttl_seconds: Lifetime of the access tokens issued from now on.
    :param clock_offset_seconds: How far AtScale's clock runs ahead of the caller's (negative: behind). It
        shifts every timestamp written (batch and instance dates, token ``iat`` and ``exp``, the ``Date``
        and ``Retry-After`` headers); batches still progress with the emulator's clock.
    """

    seed: int = 0
    rate_503: float = 0.0
    rate_429: float = 0.0
    retry_after: int = 1
    retry_after_http_date: bool = False
    rate_500: float = 0.0
    rate_drop_before: float = 0.0
    rate_drop_after: float = 0.0
    latency_seconds: float = 0.0
    rate_slow: float = 0.0
    slow_seconds: float = 0.5
    token_ttl_seconds: float = DEFAULT_TOKEN_TTL_SECONDS
    clock_offset_seconds: float = 0.0

    def __post_init__(self) -> None:
        rates = {f.name: getattr(self, f.name) for f in fields(self) if f.name.startswith("rate_")}
        if not all(0.0 <= rate <= 1.0 for rate in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"FaultConfig rates must each be in [0, 1] and add up to at most 1, got {rates}")
        _check_seconds(self, "retry_after", "latency_seconds", "slow_seconds", "token_ttl_seconds")
        _require(self, "token_ttl_seconds", self.token_ttl_seconds > 0, "> 0")
        _require(self, "clock_offset_seconds", math.isfinite(self.clock_offset_seconds), "finite")


_NO_GRANT = (
    "Table 'as_agg_broken_sales_by_product' could not be created: permission denied on schema 'atscale_aggs'"
)
_BAD_SQL = (
    "Table 'as_agg_broken_sales_by_promotion' could not be populated: "
    "SQL compilation error: invalid identifier 'PROMOTIONKEY'"
)


def _aggregates(*rows: tuple[str, str, int] | tuple[str, str, int, str]) -> tuple[AggregateDefinition, ...]:
    return tuple(AggregateDefinition(*row) for row in rows)


def default_catalogs() -> tuple[CatalogConfig, ...]:
    """
    Return the demo catalog: a good model, a failing model, a second good model and a good model with more
    aggregates than one answer of the instances endpoint lists.
    """
    internet_sales = ModelConfig(
        DEFAULT_MODEL_ID,
        "Internet Sales",
        _aggregates(
            ("18655da6-9977-5b69-9bfd-3ee5c9306093", "as_agg_internet_sales_by_day", 1826),
            ("e91814ac-81ad-5539-899d-16b579a34ab8", "as_agg_internet_sales_by_product", 158),
            ("30be1f40-48fe-5375-b122-641eb6b84080", "as_agg_internet_sales_by_customer_geo", 18484),
        ),
    )
    failing = ModelConfig(
        FAILING_MODEL_ID,
        "Internet Sales (broken grants)",
        _aggregates(
            ("bb982a62-4592-5f1b-b4f8-27472f1703e7", "as_agg_broken_sales_by_day", 1826),
            ("59d2a7f1-06ab-590b-ad9e-a80492c8e9ee", "as_agg_broken_sales_by_product", 1000, _NO_GRANT),
            ("a3258fdc-d879-56a5-81dc-9e21b357501c", "as_agg_broken_sales_by_promotion", 1000, _BAD_SQL),
        ),
        fail=True,
    )
    reseller_sales = ModelConfig(
        SECOND_MODEL_ID,
        "Reseller Sales",
        _aggregates(
            ("325a8ed7-174e-5114-8dd2-48740a5a7a8b", "as_agg_reseller_sales_by_month", 60),
            ("09731272-99cb-5f4d-84ff-efe9e2903942", "as_agg_reseller_sales_by_reseller", 701),
            ("7f24da43-3258-571c-8e59-122331ad2153", "as_agg_reseller_sales_by_employee", 17),
        ),
    )
    sales_detail = ModelConfig(
        WIDE_MODEL_ID,
        "Internet Sales Detail",
        _aggregates(
            ("6faef89c-dfeb-5fa6-8c7c-1e083c6884cd", "as_agg_sales_detail_by_day", 1826),
            ("d6572166-e445-5d74-bca6-49da5aba2329", "as_agg_sales_detail_by_week", 261),
            ("1939581d-8f6e-5803-85ad-789dcfd3a434", "as_agg_sales_detail_by_month", 60),
            ("c4353c2d-720b-5ed8-a8b8-3d2279ffc91c", "as_agg_sales_detail_by_quarter", 20),
            ("76f75554-5005-5d63-b06f-a2092f80018a", "as_agg_sales_detail_by_year", 5),
            ("aa0ed1f5-b415-594c-9ea7-b36aab707604", "as_agg_sales_detail_by_product", 606),
            ("572f7281-be5a-535c-a709-af0d0f297791", "as_agg_sales_detail_by_product_category", 4),
            ("abb81802-839f-5848-bdda-4cf8e18f0ceb", "as_agg_sales_detail_by_product_subcategory", 37),
            ("230b6063-77c6-5e86-ae29-033870d86c65", "as_agg_sales_detail_by_customer", 18484),
            ("096825b8-6607-505f-b1d3-edab64f68d94", "as_agg_sales_detail_by_customer_geo", 655),
            ("31e12d82-e414-5908-a3cc-9e1e9a3f8bb2", "as_agg_sales_detail_by_promotion", 16),
            ("0f4bd1f9-1a6d-54e3-94fc-f5fe9dd65014", "as_agg_sales_detail_by_currency", 105),
            ("6ee880da-ee80-5bb7-b9ff-944495586f09", "as_agg_sales_detail_by_sales_territory", 11),
            ("7aa2420f-188e-59ec-84ca-b5559d3fabf2", "as_agg_sales_detail_by_ship_date", 1826),
        ),
    )
    models = (internet_sales, failing, reseller_sales, sales_detail)
    return (CatalogConfig(DEFAULT_CATALOG_ID, "Sales Insights", models),)


@dataclass(frozen=True)
class EmulatorConfig:
    """
    Everything the emulator serves. The defaults refuse what the real AtScale refuses.

    :param catalogs: Catalogs and their models.
    :param api_tokens: API tokens the public ``/v1`` API accepts as ``Authorization: Bearer <token>``.
    :param default_queue_seconds: Seconds from ``new`` to ``inprogress`` for models that do not say.
    :param default_build_seconds: Seconds from ``inprogress`` to finished for models that do not say.
    :param serve_batch_history: Serve the Design Center's batch history; when false it answers 403 to
        everyone, as a server or role that refuses it does.
    :param instances_row_limit: Most rows one answer of the instances endpoint lists, whatever page or size
        is asked; ``None`` lists every row.
    :param faults: Faults in effect at start, including the access token lifetime and the clock offset.
    """

    catalogs: tuple[CatalogConfig, ...] = field(default_factory=default_catalogs)
    api_tokens: tuple[str, ...] = (DEMO_TOKEN,)
    default_queue_seconds: float = DEFAULT_QUEUE_SECONDS
    default_build_seconds: float = DEFAULT_BUILD_SECONDS
    serve_batch_history: bool = True
    instances_row_limit: int | None = DEFAULT_INSTANCES_ROW_LIMIT
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        _check_seconds(self, "default_queue_seconds", "default_build_seconds")
        ids = [catalog.id for catalog in self.catalogs]
        ids += [f"{catalog.id}/{model.id}" for catalog in self.catalogs for model in catalog.models]
        if len(set(ids)) != len(ids):
            raise ValueError(f"Catalog ids, and model ids within a catalog, must be unique, got {ids}")
        if len(set(self.api_tokens)) != len(self.api_tokens):
            raise ValueError(f"API tokens must be unique, got {len(self.api_tokens)} with repeats")
        limit = self.instances_row_limit
        _require(self, "instances_row_limit", limit is None or limit >= 1, "None or >= 1")

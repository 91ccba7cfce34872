"""
When and how long to retry a request: tenacity's decisions, run inside the transport-free flows.

A request is retried when its failure may pass: no answer at all, or HTTP 429, 502, 503 or 504 (and 500 for
requests that are safe to repeat). The POST that starts a build is not safe to repeat: it is retried only
when AtScale surely did not start a build (the connection never opened, 429, 503); other failures of it are
ambiguous and handled by the caller (see ``_flows.trigger_aggregate_build``).

Waits grow exponentially with jitter, and a ``Retry-After`` from the server (seconds or an HTTP date) is
honoured; the number of retries and the total time spent waiting are bounded by the connection's
``max_retries`` and ``retry_max_wait``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

from airflow_provider_atscale.errors import AtScaleError, AtScaleHTTPError, AtScaleTransportError

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses that may pass, for any request."""
RETRYABLE_IDEMPOTENT_STATUSES = RETRYABLE_STATUSES | {500}
"""Statuses that may pass, for requests safe to repeat."""
NOT_STARTED_STATUSES = frozenset({429, 503})
"""Statuses by which AtScale surely did not start a build: the POST may be sent again."""
AMBIGUOUS_STATUSES = frozenset({500, 502, 504})
"""Statuses after which a build may or may not have started."""

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 60.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sleep:
    """A flow's request to its driver: wait this many seconds (the driver knows how: sync or async)."""

    seconds: float


@dataclass(frozen=True)
class RetryPolicy:
    """
    How often and how long to retry.

    :param max_retries: retries after the first attempt.
    :param max_wait: seconds the retries of one request may wait, in all.
    """

    max_retries: int
    max_wait: float

    def retrying(self, *, idempotent: bool, describe: str) -> tenacity.Retrying:
        """The tenacity controller for one request."""

        def should_retry(error: BaseException) -> bool:
            return is_retryable(error, idempotent=idempotent)

        def stop(state: tenacity.RetryCallState) -> bool:
            return (
                state.attempt_number > self.max_retries
                or state.idle_for + state.upcoming_sleep > self.max_wait
            )

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "AtScale %s failed (%s); retry %d of %d in %.1fs",
                describe,
                _short(error),
                state.attempt_number,
                self.max_retries,
                state.upcoming_sleep,
            )

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(should_retry),
            stop=stop,
            wait=_wait,
            before_sleep=before_sleep,
            reraise=True,
        )


def is_retryable(error: BaseException, *, idempotent: bool) -> bool:
    """Whether a failed request may be sent again as it is."""
    if isinstance(error, AtScaleTransportError):
        return idempotent or not error.connection_opened
    if isinstance(error, AtScaleHTTPError):
        statuses = RETRYABLE_IDEMPOTENT_STATUSES if idempotent else NOT_STARTED_STATUSES
        return error.http_status in statuses
    return False


def is_ambiguous(error: BaseException) -> bool:
    """Whether a failed POST may have started a build all the same: it reached AtScale, without a clear no."""
    if isinstance(error, AtScaleTransportError):
        return error.connection_opened
    return isinstance(error, AtScaleHTTPError) and error.http_status in AMBIGUOUS_STATUSES


_backoff = tenacity.wait_exponential_jitter(initial=INITIAL_BACKOFF, max=MAX_BACKOFF)


def _wait(state: tenacity.RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome else None
    retry_after = getattr(error, "retry_after", None)
    if isinstance(retry_after, (int, float)):
        return float(retry_after)
    return float(_backoff(state))


def with_retries(
    policy: RetryPolicy, *, idempotent: bool, describe: str, attempt: Callable[[], Generator[Any, Any, T]]
) -> Generator[Any, Any, T]:
    """
    Run ``attempt`` (a flow) until it succeeds or the policy gives up, yielding :class:`Sleep` between tries.

    tenacity decides; the flow's driver sleeps, so this serves the sync and the async transport alike.
    """
    # Most requests succeed at once: tenacity's machinery is built only after a first failure.
    try:
        return (yield from attempt())
    except AtScaleError:
        first_failure = sys.exc_info()
    retrying = policy.retrying(idempotent=idempotent, describe=describe)
    retrying.begin()
    state = tenacity.RetryCallState(retrying, fn=None, args=(), kwargs={})
    state.set_exception(first_failure)  # type: ignore[arg-type]
    while True:
        action = retrying.iter(state)
        if isinstance(action, tenacity.DoAttempt):
            try:
                result = yield from attempt()
            except AtScaleError:
                state.set_exception(sys.exc_info())  # type: ignore[arg-type]
            else:
                state.set_result(result)
        elif isinstance(action, tenacity.DoSleep):
            state.prepare_for_next_attempt()
            yield Sleep(float(action))
        else:
            return action  # type: ignore[no-any-return]


def _short(error: BaseException | None) -> str:
    text = str(error) if error is not None else "no error"
    return text if len(text) <= 200 else text[:200] + "..."

"""
AtScale models as Airflow assets, ``atscale://<host>/<catalog>/<model>``: a build task names its model's asset
in ``outlets``, and each successful build emits its event with the batch id, build type, final status and
aggregate tables in ``extra`` (``docs/lineage.md``). ``<host>`` is the host of the connection's URL, with its
port where it has one (not ``:443``); the catalog and model by id, or by URL-quoted name.
:func:`sanitize_uri`, registered in the provider info, refuses a malformed ``atscale://`` URI when the DAG is
parsed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, quote, urlsplit

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Asset

SCHEME = "atscale"


def model_asset(
    host: str,
    *,
    catalog_id: str | None = None,
    model_id: str | None = None,
    catalog_name: str | None = None,
    model_name: str | None = None,
    **asset_kwargs: Any,
) -> Asset:
    """
    The asset of an AtScale model, for a build task's ``outlets`` and a downstream DAG's ``schedule``. Name
    the model as the build task does: by ids, or by names (a task given names emits for both forms).

    :param host: the AtScale URL of the build's connection (``https://atscale.example.com``), or its host and
        port (``atscale.example.com:10500``).
    :param catalog_id: the catalog's id, with ``model_id``.
    :param model_id: the model's id.
    :param catalog_name: the catalog's name as AtScale shows it, with ``model_name``.
    :param model_name: the model's name as AtScale shows it.
    :param asset_kwargs: passed on to ``Asset`` (``name``, ``group``, ``extra``...).
    :raises ValueError: no host, or the model not named by both ids or both names.
    """
    from airflow.providers.common.compat.sdk import Asset

    return Asset(uri=model_uri(host, catalog_id, model_id, catalog_name, model_name), **asset_kwargs)


def model_uri(
    host: str,
    catalog_id: str | None = None,
    model_id: str | None = None,
    catalog_name: str | None = None,
    model_name: str | None = None,
) -> str:
    """The normalised ``atscale://`` URI of a model, by ids or by names (see :func:`model_asset`)."""
    if catalog_id is not None and model_id is not None and catalog_name is None and model_name is None:
        catalog, model = catalog_id, model_id
    elif catalog_name is not None and model_name is not None and catalog_id is None and model_id is None:
        catalog, model = catalog_name, model_name
    else:
        raise ValueError(
            "An AtScale model asset names its model by catalog_id and model_id, or by catalog_name and "
            f"model_name; got catalog_id={catalog_id!r}, model_id={model_id!r}, "
            f"catalog_name={catalog_name!r}, model_name={model_name!r}"
        )
    netloc = urlsplit(host if "://" in host else f"//{host}").netloc
    path = f"/{quote(catalog, safe='')}/{quote(model, safe='')}"
    return sanitize_uri(SplitResult(SCHEME, netloc, path, "", "")).geturl()


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """
    Normalise an ``atscale://<host>/<catalog>/<model>`` URI (Airflow's asset URI handler for the scheme): a
    lower-case host, no ``:443``. Anything else is refused.

    :raises ValueError: the URI has no host, a query, or a path that is not two non-empty segments.
    """
    segments = uri.path.strip("/").split("/") if uri.path.strip("/") else []
    problem = None
    if not uri.hostname:
        problem = "no host"
    elif uri.query:
        problem = f"a query ({uri.query!r})"
    elif len(segments) != 2 or not all(segments):
        problem = f"the path {uri.path!r} instead of /<catalog>/<model>"
    if problem is not None:
        raise ValueError(
            f"An AtScale asset URI must be atscale://<host>/<catalog>/<model>; {uri.geturl()!r} has {problem}"
        )
    netloc = uri.netloc.lower()
    netloc = netloc.removesuffix(":443")
    return uri._replace(netloc=netloc, path="/" + "/".join(segments), fragment="")

"""Apache Airflow provider for AtScale: trigger aggregate builds and follow them to their end."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]

CONNECTION_TYPE = "atscale"


def get_provider_info() -> dict[str, Any]:
    """
    Describe this provider to Airflow's ``ProvidersManager``.

    Airflow reads this through the ``apache_airflow_provider`` entry point without importing the hook,
    so the connection form (fields, labels, placeholders) is declared here rather than in Python code.
    """
    return {
        "package-name": "airflow-provider-atscale",
        "name": "AtScale",
        "description": "Trigger and follow AtScale aggregate builds.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "AtScale",
                "external-doc-url": "https://documentation.atscale.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "AtScale",
                "python-modules": ["airflow_provider_atscale.hooks.atscale"],
            }
        ],
        "operators": [
            {
                "integration-name": "AtScale",
                "python-modules": ["airflow_provider_atscale.operators.atscale"],
            }
        ],
        # AtScale models as assets (and, on Airflow 2.11, datasets): atscale://<host>/<catalog>/<model>.
        "asset-uris": [{"schemes": ["atscale"], "handler": "airflow_provider_atscale.assets.sanitize_uri"}],
        "dataset-uris": [{"schemes": ["atscale"], "handler": "airflow_provider_atscale.assets.sanitize_uri"}],
        "connection-types": [
            {
                "connection-type": CONNECTION_TYPE,
                "hook-class-name": "airflow_provider_atscale.hooks.atscale.AtScaleHook",
                "hook-name": "AtScale",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "extra"],
                    "relabeling": {
                        "host": "AtScale URL",
                        "login": "Username",
                        "password": "API token",
                    },
                    "placeholders": {
                        "host": "https://atscale.example.com",
                        "port": "443 (leave empty to use the URL's)",
                        "login": "only with Auth type 'password'",
                        "password": "API token from Design Center (Account > API Token), or the password",
                    },
                },
                "conn-fields": {
                    "verify": {
                        "label": "Verify TLS",
                        "description": "true, false, or the path of a CA bundle file on the workers.",
                        "schema": {"type": ["string", "null"], "default": "true"},
                    },
                    "timeout": {
                        "label": "Request timeout (seconds)",
                        "description": "Seconds to wait for each HTTP request to AtScale.",
                        "schema": {"type": ["number", "null"], "default": 30, "minimum": 1},
                    },
                    "auth_type": {
                        "label": "Auth type",
                        "description": "token: the API token as bearer; token_exchange: exchanged for "
                        "short-lived tokens; password: the Identity Broker's password grant.",
                        "schema": {
                            "type": ["string", "null"],
                            "default": "token",
                            "enum": ["token", "token_exchange", "password"],
                        },
                    },
                    "client_id": {
                        "label": "Client ID (password auth)",
                        "description": "Only with Auth type 'password': the Identity Broker client. "
                        "atscale-ai-link is public (no secret); atscale-modeler and atscale-public-api "
                        "need a client secret.",
                        "schema": {"type": ["string", "null"], "default": "atscale-ai-link"},
                    },
                    "client_secret": {
                        "label": "Client secret (password auth)",
                        "description": "Only with Auth type 'password', if the client has a secret.",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "realm": {
                        "label": "Realm (password auth)",
                        "description": "Only with Auth type 'password': the Identity Broker realm.",
                        "schema": {"type": ["string", "null"], "default": "atscale"},
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "description": "Retries of a request that failed in a way that may pass.",
                        "schema": {"type": ["integer", "null"], "default": 5, "minimum": 0, "maximum": 100},
                    },
                    "lineage_namespaces": {
                        "label": "OpenLineage namespaces",
                        "description": "JSON object: AtScale data-warehouse connection id to the OpenLineage "
                        'namespace of its aggregate tables, e.g. {"snowflake-warehouse": '
                        '"snowflake://acme-xy12345"}, or to {"namespace": ..., "database": ...}.',
                        "schema": {"type": ["string", "null"]},
                    },
                    "retry_max_wait": {
                        "label": "Max retry wait (seconds)",
                        "description": "Seconds one request may spend waiting between retries, in all.",
                        "schema": {"type": ["number", "null"], "default": 300, "minimum": 0},
                    },
                },
            }
        ],
    }

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
        "connection-types": [
            {
                "connection-type": CONNECTION_TYPE,
                "hook-class-name": "airflow_provider_atscale.hooks.atscale.AtScaleHook",
                "hook-name": "AtScale",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "extra"],
                    "relabeling": {"host": "AtScale URL", "password": "API token"},
                    "placeholders": {
                        "host": "https://atscale.example.com",
                        "port": "443 (leave empty to use the URL's)",
                        "password": "API token from Design Center (Account > API Token)",
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
                },
            }
        ],
    }

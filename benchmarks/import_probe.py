"""
Time modules' import on top of ``airflow.sdk`` in this fresh interpreter; print the result as JSON.

``python -I benchmarks/import_probe.py MODULE [MODULE ...]``. Only ``sys`` and ``time`` are imported before
the clock starts, so the modules under test pay for everything they bring in beyond what a DAG file already
has: ``airflow.sdk`` with ``BaseOperator`` loaded (the SDK loads it lazily, on first access). Several modules
are imported one after the other and timed together (a trigger and its hook, say).
"""

import sys
import time


def main() -> None:
    """Import ``airflow.sdk``, then the modules named on the command line, and report the time and modules."""
    import airflow.sdk

    airflow.sdk.BaseOperator  # noqa: B018 - the access is the point: it runs the lazy import
    before = set(sys.modules)
    started = time.perf_counter()
    for module in sys.argv[1:]:
        __import__(module)
    seconds = time.perf_counter() - started
    import json

    print(json.dumps({"import_seconds": seconds, "added_modules": sorted(set(sys.modules) - before)}))


if __name__ == "__main__":
    main()

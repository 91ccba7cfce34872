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
    """Import ``airflow.sdk``, then the modules named on the command line, and report both."""
    modules = sys.argv[1:]
    started = time.perf_counter()
    import airflow.sdk

    airflow.sdk.BaseOperator  # noqa: B018 - the access is the point: it runs the lazy import
    sdk_done = time.perf_counter()
    before = set(sys.modules)
    for module in modules:
        __import__(module)
    done = time.perf_counter()
    added = sorted(set(sys.modules) - before)

    import json

    print(
        json.dumps(
            {
                "module": " ".join(modules),
                "sdk_seconds": sdk_done - started,
                "import_seconds": done - sdk_done,
                "added_modules": added,
                "loaded_before": sorted(before),
            }
        )
    )


if __name__ == "__main__":
    main()

"""
The benchmarks' one server process: AtScale's API (the package's emulator), and the two peers' APIs.

``python -m benchmarks.fake_server --certificates DIR``

One process on 127.0.0.1, three listeners: ``api`` (plain HTTP), ``api_tls`` (HTTPS, for clients that build
``https://`` URLs whatever they are told, such as the dbt Cloud hook) and ``control`` (the ``/_fake/``
paths, so the benchmark's own requests never mix with a family's connections). ``/api/...`` goes to
:class:`benchmarks.peer_apis.PeerApis`; every other path to the ASGI application of an
``airflow_provider_atscale.emulator.EmulatorServer`` (never started: this process serves it). The emulator
takes a batch's timings from its model, so whenever the benchmark asks for AtScale work the emulator is
replaced by a fresh one with a model per batch.

Around all of it, the measurements the benchmarks need: per API, the requests, the bytes of each answer
(status line, headers and body: what crossed the socket before any TLS) and the distinct client ports (a
TCP connection keeps its port while it lives); for AtScale, each request's client port, method and model.

The TLS certificate is made at start-up, signed by a throwaway CA whose file the process reports. Once every
listener serves, it prints one line ``FAKE_SERVER <json>`` and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import http
import ipaddress
import json
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchmarks.loop_probes import raise_open_file_limit
from benchmarks.peer_apis import DATABRICKS, DBT, PeerApis, read_body

ATSCALE = "atscale"
APIS = (DBT, DATABRICKS, ATSCALE)
READY_PREFIX = "FAKE_SERVER "
HOST = "127.0.0.1"
LISTEN_BACKLOG = 4096
KEEP_ALIVE_SECONDS = 75
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
QUEUE_SECONDS = 1.0
"""Seconds each AtScale batch of the comparison stays ``new``, as the peers' jobs stay queued."""


@dataclass(frozen=True)
class FakeServerInfo:
    """
    A running fake server, as it described itself.

    :param url: the plain HTTP API base URL.
    :param tls_url: the HTTPS API base URL.
    :param control_url: the base URL of the control paths.
    :param token: the API token every API accepts.
    :param ca_file: the CA certificate that signed the HTTPS listener's certificate (PEM).
    """

    url: str
    tls_url: str
    control_url: str
    token: str
    ca_file: str

    @property
    def port(self) -> int:
        """The plain HTTP API port."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def tls_port(self) -> int:
        """The HTTPS API port."""
        return int(self.tls_url.rsplit(":", 1)[1])

    def control(self, action: str, body: dict[str, Any] | None = None) -> Any:
        """
        Call a control path: ``POST`` with a body, else ``GET``; return its JSON.

        :param action: ``jobs``, ``atscale``, ``reset``, ``stats`` or ``requests``.
        :param body: the JSON body, for a POST.
        """
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.control_url}/_fake/{action}", data=data)
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def atscale_batches(self) -> list[dict[str, Any]]:
        """The emulator's batches (``GET /_emulator/batches``): ``endTime`` once each has ended."""
        with urllib.request.urlopen(f"{self.url}/_emulator/batches", timeout=60) as response:
            result: list[dict[str, Any]] = json.loads(response.read())
            return result


@contextmanager
def running_fake_server(log: IO[str] | None = None) -> Iterator[FakeServerInfo]:
    """
    Run ``python -m benchmarks.fake_server`` for the duration of a ``with`` block, once it serves.

    :param log: where its standard error goes; this process's by default.
    """
    with tempfile.TemporaryDirectory(prefix="bench-fake-server-") as directory:
        command = [sys.executable, "-m", "benchmarks.fake_server", "--certificates", directory]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            # Its one line on stdout: nothing more can fill the pipe.
            assert process.stdout is not None
            readable, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_SECONDS)
            line = process.stdout.readline() if readable else ""
            if not line.startswith(READY_PREFIX):
                raise RuntimeError(f"The fake server did not start (exit status {process.poll()})")
            yield FakeServerInfo(**json.loads(line[len(READY_PREFIX) :]))
        finally:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class FakeServer:
    """
    The ASGI application: routes each request to its API and measures it; serves the control paths.

    :param token: the API token every API accepts (the emulator's too).
    """

    def __init__(self, token: str) -> None:
        self.token = token
        self.peers = PeerApis(token)
        self.counts: dict[str, dict[str, Any]] = {}
        self.atscale_requests: list[tuple[int, str, str | None]] = []
        self.reset()
        self.use_emulator([])

    def reset(self) -> None:
        """Forget every count and recorded request (the jobs stay)."""
        self.counts = {api: {"requests": 0, "wire_bytes": 0, "ports": set()} for api in APIS}
        self.atscale_requests.clear()

    def use_emulator(self, timings: Sequence[tuple[float, float]]) -> list[str]:
        """
        Serve a fresh emulator whose one catalog holds one model per timing; return the models' ids.

        Each model is the emulator's default model (its aggregates) under a new id, with its own timings.

        :param timings: each model's seconds ``new`` and seconds building.
        """
        from airflow_provider_atscale.emulator import (
            DEFAULT_CATALOG_ID,
            DEFAULT_MODEL_ID,
            CatalogConfig,
            EmulatorConfig,
            EmulatorServer,
            ModelConfig,
        )

        base: ModelConfig = next(
            m for c in EmulatorConfig().catalogs for m in c.models if m.id == DEFAULT_MODEL_ID
        )
        models = tuple(
            dataclasses.replace(
                base, id=str(uuid.uuid4()), name=f"Model {i}", queue_seconds=q, build_seconds=b
            )
            for i, (q, b) in enumerate(timings)
        )
        catalog = CatalogConfig(id=DEFAULT_CATALOG_ID, name="Benchmark catalog", models=models)
        self.emulator = EmulatorServer(EmulatorConfig(catalogs=(catalog,), api_tokens=(self.token,)))
        self.catalog_id = DEFAULT_CATALOG_ID
        return [model.id for model in models]

    def atscale_jobs(self, seconds: Sequence[float]) -> list[dict[str, Any]]:
        """
        A fresh emulator with one model per duration, and on each model a batch ending that long from now.

        Each model has built once before (a batch made just earlier), so the newest history page the
        provider reads first is full. A batch stays ``new`` for at most :data:`QUEUE_SECONDS`.

        :param seconds: each batch's duration, from its creation to its end.
        """
        model_ids = self.use_emulator([(min(QUEUE_SECONDS, s), max(0.0, s - QUEUE_SECONDS)) for s in seconds])
        jobs = []
        for model_id, duration in zip(model_ids, seconds, strict=True):
            self.emulator.state.create_batch(self.catalog_id, model_id, is_full_build=True)
            created = time.time()
            batch = self.emulator.state.create_batch(self.catalog_id, model_id, is_full_build=True)
            jobs.append(
                {"id": batch.id, "model_id": model_id, "created": created, "ends": created + duration}
            )
        return jobs

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/_fake/"):
            await self._control(scope, receive, send)
            return
        if path.startswith("/_emulator/"):
            await self.emulator.app(scope, receive, send)
            return
        api = DBT if path.startswith("/api/v2/") else DATABRICKS if path.startswith("/api/2.") else ATSCALE
        counts = self.counts[api]
        port = (scope.get("client") or ("", 0))[1]
        counts["requests"] += 1
        counts["ports"].add(port)
        if api == ATSCALE:
            query = dict(urllib.parse.parse_qsl(scope["query_string"].decode("latin-1")))
            model = query.get("modelId") or (path.rsplit("/models/", 1)[1] if "/models/" in path else None)
            self.atscale_requests.append((port, scope["method"], model))

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                line = f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
                headers = sum(len(name) + len(value) + 4 for name, value in message.get("headers", []))
                counts["wire_bytes"] += len(line) + headers + 2
            elif message["type"] == "http.response.body":
                counts["wire_bytes"] += len(message.get("body", b""))
            await send(message)

        await (self.peers if api != ATSCALE else self.emulator.app)(scope, receive, counted)

    async def _control(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await read_body(receive)
        request = json.loads(body) if body else {}
        action, status = scope["path"][len("/_fake/") :], 200
        payload: Any
        if action == "jobs":
            api, seconds = request["api"], [float(s) for s in request["seconds"]]
            jobs = self.atscale_jobs(seconds) if api == ATSCALE else self.peers.create_jobs(api, seconds)
            payload = {"catalog_id": self.catalog_id, "jobs": jobs}
        elif action == "atscale":
            models = self.use_emulator([(float(q), float(b)) for q, b in request["timings"]])
            payload = {"catalog_id": self.catalog_id, "model_ids": models}
        elif action == "reset":
            self.reset()
            payload = {"reset": True}
        elif action == "stats":
            payload = {api: {**c, "ports": len(c["ports"])} for api, c in self.counts.items()}
        elif action == "requests":
            payload = self.atscale_requests
        else:
            status, payload = 404, {"message": f"No control path {scope['path']}"}
        raw = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """
    A throwaway CA and a certificate for 127.0.0.1 signed by it; returns the CA, certificate and key files.

    :param directory: where to write them.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airflow-provider-atscale bench CA")])

    def certificate(subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
        )

    ca = (
        certificate(ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]), key.public_key())
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


async def serve(certificates: Path) -> int:
    """
    Serve every listener until SIGTERM or SIGINT.

    :param certificates: the directory for the TLS files.
    """
    import uvicorn

    app = FakeServer(secrets.token_urlsafe(24))
    ca_file, cert_file, key_file = make_certificates(certificates)

    class QuietServer(uvicorn.Server):
        # The process installs its own signal handlers, once, for every listener.
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    listeners = {
        name: socket.create_server((HOST, 0), backlog=LISTEN_BACKLOG)
        for name in ("api", "api_tls", "control")
    }
    servers, tasks = [], []
    for name, sock in listeners.items():
        tls = {"ssl_certfile": str(cert_file), "ssl_keyfile": str(key_file)} if name == "api_tls" else {}
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
            date_header=False,
            backlog=LISTEN_BACKLOG,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            **tls,  # type: ignore[arg-type]
        )
        servers.append(QuietServer(config))
        tasks.append(asyncio.create_task(servers[-1].serve(sockets=[sock])))
    while not all(server.started for server in servers):
        if any(task.done() for task in tasks):
            return 1
        await asyncio.sleep(0.01)
    ports = {name: sock.getsockname()[1] for name, sock in listeners.items()}
    ready = {
        "url": f"http://{HOST}:{ports['api']}",
        "tls_url": f"https://{HOST}:{ports['api_tls']}",
        "control_url": f"http://{HOST}:{ports['control']}",
        "token": app.token,
        "ca_file": str(ca_file),
    }
    print(READY_PREFIX + json.dumps(ready), flush=True)
    await asyncio.wait([asyncio.create_task(stop.wait()), *tasks], return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    return 0 if stop.is_set() else 1


def main() -> int:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fake_server", description=__doc__)
    parser.add_argument("--certificates", type=Path, required=True, help="directory for the TLS files")
    args = parser.parse_args()
    raise_open_file_limit()
    import uvloop

    return uvloop.run(serve(args.certificates))


if __name__ == "__main__":
    sys.exit(main())

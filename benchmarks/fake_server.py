"""
The fake job-status server of the trigger comparison, in a process of its own, and the client to drive it.

``python -m benchmarks.fake_server [--certificates DIR]``

One process on 127.0.0.1 serving :class:`benchmarks.fake_apis.FakeApis` on three listeners: ``api`` (plain
HTTP), ``api_tls`` (HTTPS, for clients that build ``https://`` URLs whatever they are told, such as the dbt
Cloud hook) and ``control`` (the ``/_fake/`` paths the benchmark uses, so its own requests never mix with a
family's connections). The TLS certificate is made at start-up, signed by a throwaway CA whose certificate
file the process reports. It installs its signal handlers, starts every listener, and only then prints one
line ``FAKE_SERVER <json>`` (the URLs, token and CA file); it serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import os
import resource
import secrets
import signal
import socket
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.announced_process import announced_process
from benchmarks.fake_apis import FakeApis

READY_PREFIX = "FAKE_SERVER "
HOST = "127.0.0.1"
LISTEN_BACKLOG = 4096
KEEP_ALIVE_SECONDS = 75
LISTENERS = ("api", "api_tls", "control")


@dataclass(frozen=True)
class FakeServerInfo:
    """
    A running fake server, as it described itself.

    :param url: the plain HTTP API base URL.
    :param tls_url: the HTTPS API base URL.
    :param control_url: the base URL of the control paths.
    :param token: the API token every API accepts.
    :param ca_file: the CA certificate that signed the HTTPS listener's certificate (PEM).
    :param pid: the server process id.
    """

    url: str
    tls_url: str
    control_url: str
    token: str
    ca_file: str
    pid: int

    @property
    def port(self) -> int:
        """The plain HTTP API port."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def tls_port(self) -> int:
        """The HTTPS API port."""
        return int(self.tls_url.rsplit(":", 1)[1])

    def to_json(self) -> dict[str, Any]:
        """The description as JSON (to hand to a family's process)."""
        return {
            "url": self.url,
            "tls_url": self.tls_url,
            "control_url": self.control_url,
            "token": self.token,
            "ca_file": self.ca_file,
            "pid": self.pid,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FakeServerInfo:
        """
        Read a description written by :meth:`to_json`.

        :param data: the JSON object.
        """
        return cls(**data)

    def control(self, action: str, body: dict[str, Any] | None = None) -> Any:
        """
        Call a control path: ``POST`` with a body, else ``GET``; return its JSON.

        :param action: ``jobs``, ``stats``, ``reset`` or ``health``.
        :param body: the JSON body, for a POST.
        """
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.control_url}/_fake/{action}", data=data)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())


@contextmanager
def running_fake_server() -> Iterator[FakeServerInfo]:
    """Run ``python -m benchmarks.fake_server`` for the duration of a ``with`` block."""
    with tempfile.TemporaryDirectory(prefix="bench-fake-server-") as directory:
        command = [sys.executable, "-m", "benchmarks.fake_server", "--certificates", directory]
        with announced_process(command, READY_PREFIX, what="The fake server") as (ready, pid):
            yield FakeServerInfo.from_json({**ready, "pid": pid})


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
    validity = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2))
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airflow-provider-atscale bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
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
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server-key.pem",
    )
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_file, cert_file, key_file


def _listening_socket() -> socket.socket:
    return socket.create_server((HOST, 0), backlog=LISTEN_BACKLOG)


async def serve(certificates: Path) -> int:
    """
    Serve every listener until SIGTERM or SIGINT.

    :param certificates: the directory for the TLS files.
    """
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    app = FakeApis(secrets.token_urlsafe(24))
    ca_file, cert_file, key_file = make_certificates(certificates)

    def counting_protocol(listener: str) -> type[HttpToolsProtocol]:
        class CountingProtocol(HttpToolsProtocol):
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                app.connection_made(listener)
                super().connection_made(transport)

        return CountingProtocol

    class QuietServer(uvicorn.Server):
        # The process installs its own signal handlers, once, for every listener.
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sockets = {listener: _listening_socket() for listener in LISTENERS}
    servers = []
    for listener in sockets:
        tls = {"ssl_certfile": str(cert_file), "ssl_keyfile": str(key_file)} if listener == "api_tls" else {}
        config = uvicorn.Config(
            app,
            http=counting_protocol(listener),
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
    tasks = [
        asyncio.create_task(server.serve(sockets=[sock]))
        for server, sock in zip(servers, sockets.values(), strict=True)
    ]
    while not all(server.started for server in servers):
        if any(task.done() for task in tasks):
            return 1
        await asyncio.sleep(0.01)
    ports = {name: sock.getsockname()[1] for name, sock in sockets.items()}
    ready = {
        "url": f"http://{HOST}:{ports['api']}",
        "tls_url": f"https://{HOST}:{ports['api_tls']}",
        "control_url": f"http://{HOST}:{ports['control']}",
        "token": app.token,
        "ca_file": str(ca_file),
    }
    print(READY_PREFIX + json.dumps(ready), flush=True)
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    return 0 if stop.is_set() else 1


def main() -> int:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fake_server", description=__doc__)
    parser.add_argument("--certificates", type=Path, help="directory for the TLS files (default: a new one)")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    directory = args.certificates or Path(tempfile.mkdtemp(prefix="bench-fake-server-"))
    os.makedirs(directory, exist_ok=True)
    import uvloop

    return uvloop.run(serve(directory))


if __name__ == "__main__":
    sys.exit(main())

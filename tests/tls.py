"""TLS for the backend tests, through a TLS-terminating proxy.

The embedded server is built without OpenSSL, so TLS is tested against a small proxy that
answers PostgreSQL's SSLRequest, terminates TLS with a certificate made for the test, and
forwards the plaintext protocol to the real server.

* ``certificates``: a folder with a throwaway CA (``ca.pem``), the proxy's certificate for
  localhost and 127.0.0.1 signed by it (``server.pem``, ``server.key``), and an unrelated CA
  (``other.pem``) for verification that must fail.
* ``tls_proxy``: the proxy's port on 127.0.0.1; ``dsn_through(pg_server, tls_proxy)`` is the
  test server's DSN by way of it.
* ``check_certificate_verification``: the verification checks every backend makes, given how
  its driver shows the TLS in use.

The fixtures are registered for the suite by ``pytest_plugins`` in ``tests/conftest.py``, so
that every backend's tests use the same proxy and certificates.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgconnector import ConnectionError, PoolConfig
from tests.conftest import ServerInfo

SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # length 8, then the SSLRequest code


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(out: Path, *, subject: str, alt_names: str) -> Path:
    """Into ``out``: a throwaway CA (``ca.pem``), a server certificate signed by it
    (``server.pem``, ``server.key``) for ``subject`` (a CN) and ``alt_names`` (an OpenSSL
    subjectAltName value), and an unrelated CA (``other.pem``). Skips the test without the
    openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    _openssl(out, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=pgconnector test CA", "-keyout", "ca.key", "-out", "ca.pem")
    (out / "san.cnf").write_text(f"subjectAltName={alt_names}\n")
    _openssl(out, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={subject}",
             "-keyout", "server.key", "-out", "server.csr")
    _openssl(out, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.pem")
    _openssl(out, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=another CA", "-keyout", "other.key", "-out", "other.pem")
    return out


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certificates(
        tmp_path_factory.mktemp("certs"),
        subject="localhost",
        alt_names="DNS:localhost,IP:127.0.0.1",
    )


@pytest.fixture
def tls_proxy(certificates: Path, pg_server: ServerInfo) -> Iterator[int]:
    upstream_port = PoolConfig.from_dsn(pg_server.dsn).connect_params().port
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    stop = threading.Event()
    sockets: list[socket.socket] = []

    def pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def serve(client: socket.socket) -> None:
        try:
            request = client.recv(8)
            if request != SSL_REQUEST:  # a plaintext start-up: hang up
                client.close()
                return
            client.sendall(b"S")
            secure = context.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(("127.0.0.1", upstream_port))
        except (OSError, ssl.SSLError):
            client.close()
            return
        sockets.extend([secure, upstream])
        threading.Thread(target=pump, args=(secure, upstream), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, secure), daemon=True).start()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            client.settimeout(None)
            threading.Thread(target=serve, args=(client,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    listener.close()
    for sock in sockets:
        sock.close()


def dsn_through(pg_server: ServerInfo, port: int, host: str = "127.0.0.1") -> str:
    """The test server's DSN by way of the proxy on ``port``, addressed as ``host``."""
    params = PoolConfig.from_dsn(pg_server.dsn).connect_params()
    return f"postgresql://{params.user}:{params.password}@{host}:{port}/{params.database}"


async def check_certificate_verification(
    make: Any,
    pg_server: ServerInfo,
    tls_proxy: int,
    certificates: Path,
    *,
    refused_sslmode: str,
    peer_certificate: Callable[[Any], Any],
    context_in_use: Callable[[Any], Any],
) -> ssl.SSLContext:
    """Through the proxy, addressed as localhost: ``sslrootcert`` (in the DSN) naming the test
    CA verifies the proxy's certificate, whose subject ``peer_certificate(client)`` shows;
    naming an unrelated CA fails in ``refused_sslmode`` with the ssl module's verification
    error; and an SSLContext given as ``ssl`` is the one in use (``context_in_use(client)``).
    Returns that context."""
    ca, other = certificates / "ca.pem", certificates / "other.pem"
    dsn = dsn_through(pg_server, tls_proxy, "localhost")
    good = make(f"{dsn}?sslrootcert={ca}", min_size=1, ssl="verify-full")
    await good.connect()
    async with good.connection() as c:
        assert peer_certificate(c)["subject"] == ((("commonName", "localhost"),),)
    bad = make(f"{dsn}?sslrootcert={other}", min_size=1, ssl=refused_sslmode)
    with pytest.raises(ConnectionError) as info:
        await bad.connect()
    assert isinstance(info.value.cause, ssl.SSLCertVerificationError)
    context = ssl.create_default_context(cafile=str(ca))
    given = make(dsn, min_size=1, ssl=context)
    await given.connect()
    async with given.connection() as c:
        assert context_in_use(c) is context
    return context

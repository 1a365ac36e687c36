"""deploy/nginx/authmesh-relay.conf in front of a real relay, through a real nginx.

Only the site-specific lines are replaced (certificate paths, the public port and the relay's
port); each replacement must hit exactly once, so a changed config cannot slip past the test.
A client then pairs two WebSockets over TLS through nginx, reads ``/health`` through it, and
shows that with the documented ``AMESH_TRUST_PROXY=1`` a forged ``X-Forwarded-For`` does not buy
a fresh rate-limit bucket.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import RelayFactory
from tests.deploy.http_probe import get_health
from tests.relayproc import START_DEADLINE_S, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "deploy" / "nginx" / "authmesh-relay.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
FRAME_DEADLINE_S = 5.0
FAILURE_LIMIT = 3

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (scripts/install-system-deps)"
)


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def site_config(public_port: int, relay_port: int, cert: Path, key: Path) -> str:
    text = SITE.read_text(encoding="utf-8")
    for old, new in (
        ("listen 443 ssl;", f"listen 127.0.0.1:{public_port} ssl;"),
        ("server 127.0.0.1:3001;", f"server 127.0.0.1:{relay_port};"),
        ("/etc/ssl/certs/relay.example.com.pem", str(cert)),
        ("/etc/ssl/private/relay.example.com.key", str(key)),
    ):
        assert text.count(old) == 1, f"{SITE.name} no longer contains {old!r} exactly once"
        text = text.replace(old, new)
    return text


def main_config(directory: Path, site: Path) -> Path:
    temp_paths = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    path = directory / "nginx.conf"
    path.write_text(
        f"daemon off;\nmaster_process off;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'};\nevents {{}}\n"
        f"http {{\n    access_log off;\n{temp_paths}\n    include {site};\n}}\n",
        encoding="utf-8",
    )
    return path


def tls_client() -> ssl.SSLContext:
    """The test's self-signed certificate is not verified; TLS itself is what is exercised."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.fixture
def public_port(tmp_path: Path, relay_factory: RelayFactory) -> Iterator[int]:
    """Port of nginx (TLS, the repository's site config) in front of a running relay."""
    relay = relay_factory(
        {"AMESH_TRUST_PROXY": "1", "AMESH_PAIRING_FAILURE_LIMIT": str(FAILURE_LIMIT)}
    )
    public_port = free_port()
    cert, key = self_signed(tmp_path)
    site = tmp_path / "site.conf"
    site.write_text(site_config(public_port, relay.port, cert, key), encoding="utf-8")
    config = main_config(tmp_path, site)
    command = [NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(config)]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr

    proxy = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        health = f"https://127.0.0.1:{public_port}/health"
        wait_until(
            lambda: proxy.poll() is not None or get_health(health, tls_client())[0] == 200,
            START_DEADLINE_S,
            "nginx to proxy /health",
        )
        assert proxy.poll() is None, "nginx did not proxy /health"
        yield public_port
    finally:
        os.killpg(proxy.pid, signal.SIGTERM)
        proxy.wait(10)


async def received(socket: ClientConnection) -> object:
    return json.loads(await asyncio.wait_for(socket.recv(), FRAME_DEADLINE_S))


async def test_pairing_through_nginx(public_port: int) -> None:
    url = f"wss://127.0.0.1:{public_port}/ws"
    tls = tls_client()
    async with (
        connect(url, ssl=tls, open_timeout=FRAME_DEADLINE_S) as target,
        connect(url, ssl=tls, open_timeout=FRAME_DEADLINE_S) as controller,
    ):
        await target.send(json.dumps({"type": "listen", "otc": "482916"}))
        assert await received(target) == {"type": "ack", "message": "session_open"}
        await controller.send(json.dumps({"type": "connect", "otc": "482916"}))
        assert await received(target) == {"type": "peer_found"}
        assert await received(controller) == {"type": "peer_found"}
        await target.send(json.dumps({"type": "data", "payload": "x" * 1024}))
        assert await received(controller) == {"type": "data", "payload": "x" * 1024}


def test_health_is_published_and_metrics_are_not(public_port: int) -> None:
    status, body = get_health(f"https://127.0.0.1:{public_port}/health", tls_client())
    assert status == 200
    assert body["status"] == "ok"
    assert get_health(f"https://127.0.0.1:{public_port}/metrics", tls_client())[0] == 404


async def test_forged_forwarded_for_does_not_escape_the_rate_limit(public_port: int) -> None:
    """nginx appends the real peer; the relay takes that right-most entry, not the forged one."""
    url = f"wss://127.0.0.1:{public_port}/ws"
    tls = tls_client()
    answers = []
    for attempt in range(FAILURE_LIMIT + 1):
        forged = {"X-Forwarded-For": f"198.51.100.{attempt + 1}"}
        async with connect(url, ssl=tls, additional_headers=forged) as guesser:
            await guesser.send(json.dumps({"type": "connect", "otc": "000000"}))
            answers.append(await received(guesser))
    assert answers == [{"type": "error", "code": "otc_not_found"}] * FAILURE_LIMIT + [
        {"type": "error", "code": "rate_limited"}
    ]

"""A real nginx running the repository's site config (deploy/nginx/authmesh-relay.conf).

Only the site-specific lines are replaced (the public port, the relay upstream servers and, with
TLS, the certificate paths; without TLS the listener is plain HTTP); each replacement must hit
exactly once, so a changed config cannot slip past the tests. nginx runs in the foreground
without a master process, from a private prefix directory, and is ready once it proxies
``/health``.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.deploy.http_probe import get_health
from tests.support.relayproc import REPO, START_DEADLINE_S, free_port, wait_until

__all__ = [
    "NGINX",
    "SITE",
    "checked_command",
    "main_config",
    "running_nginx",
    "self_signed",
    "serving",
    "site_config",
    "tls_client",
]

SITE = REPO / "deploy" / "nginx" / "authmesh-relay.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
_CERT_PATH = "/etc/ssl/certs/relay.example.com.pem"
_KEY_PATH = "/etc/ssl/private/relay.example.com.key"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate and key for relay.example.com: (cert path, key path)."""
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


def site_config(public_port: int, relay_ports: Sequence[int], tls: tuple[Path, Path] | None) -> str:
    """The repository's site config for 127.0.0.1:``public_port`` in front of ``relay_ports``
    (nginx's default round robin, no affinity); ``tls`` is (cert, key), or None for plain HTTP."""
    text = SITE.read_text(encoding="utf-8")
    upstream = "\n    ".join(f"server 127.0.0.1:{port};" for port in relay_ports)
    if tls is None:
        listener = [
            ("listen 443 ssl;", f"listen 127.0.0.1:{public_port};"),
            (f"ssl_certificate     {_CERT_PATH};", ""),
            (f"ssl_certificate_key {_KEY_PATH};", ""),
        ]
    else:
        listener = [
            ("listen 443 ssl;", f"listen 127.0.0.1:{public_port} ssl;"),
            (_CERT_PATH, str(tls[0])),
            (_KEY_PATH, str(tls[1])),
        ]
    for old, new in [("server 127.0.0.1:3001;", upstream), *listener]:
        assert text.count(old) == 1, f"{SITE.name} no longer contains {old!r} exactly once"
        text = text.replace(old, new)
    return text


def main_config(directory: Path, site: Path) -> Path:
    """An nginx.conf that keeps every file in ``directory`` and includes ``site``."""
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


@contextmanager
def running_nginx(directory: Path, relay_ports: Sequence[int], tls: bool) -> Iterator[int]:
    """nginx (the site config, checked with ``nginx -t``) on a free loopback port in front of
    ``relay_ports``, with a throw-away certificate when ``tls``; yields the public port once
    ``/health`` answers 200 through it, and stops nginx when the block ends."""
    public_port = free_port()
    site = site_config(public_port, relay_ports, self_signed(directory) if tls else None)
    with serving(directory, site, public_port, tls):
        yield public_port


def checked_command(directory: Path, site: str) -> list[str]:
    """The nginx command line serving the ``site`` text, after ``nginx -t`` accepted it."""
    site_path = directory / "site.conf"
    site_path.write_text(site, encoding="utf-8")
    config = main_config(directory, site_path)
    command = [NGINX, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(config)]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    return command


@contextmanager
def serving(directory: Path, site: str, public_port: int, tls: bool = False) -> Iterator[None]:
    """nginx serving the ``site`` text (checked with ``nginx -t``) until the block ends; enters
    once ``/health`` answers 200 on ``public_port`` through it."""
    command = checked_command(directory, site)
    health = f"{'https' if tls else 'http'}://127.0.0.1:{public_port}/health"
    context = tls_client() if tls else None
    proxy = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(
            lambda: proxy.poll() is not None or get_health(health, context)[0] == 200,
            START_DEADLINE_S,
            "nginx to proxy /health",
        )
        assert proxy.poll() is None, "nginx did not proxy /health"
        yield
    finally:
        os.killpg(proxy.pid, signal.SIGTERM)
        proxy.wait(10)

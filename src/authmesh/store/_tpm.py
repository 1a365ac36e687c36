"""TPM 2.0 keystore through tpm2-tools, with the reference's handles and commands (spec §8.4).

Keys live at a persistent handle derived from the alias (``0x81`` + 24 bits of
SHA-256(alias)), so keys the reference created are reused. Commands run without a
shell, with a timeout, and use the TCTI from the environment (``TPM2TOOLS_TCTI``).
Differences from the reference: signatures are normalised to low S (W3 — otherwise
about half of them fail at any low-S verifier), temporary files live in a private
0700 directory, and a failure names the tool and what to check.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authmesh.core import device_id
from authmesh.core._b64 import b64encode
from authmesh.core._keys import compress, der_to_raw, normalize_low_s
from authmesh.store._errors import StoreError
from authmesh.store._home import AmeshHome
from authmesh.store._keystore import TPM2, read_or_create_hmac_file

__all__ = [
    "TpmKeyStore",
    "TpmSigner",
    "TpmTools",
    "parse_tpmt_signature",
    "pem_to_compressed",
    "persistent_handle",
    "signature_to_raw",
]

_TIMEOUT_SECONDS = 15.0
_TPM_NODES = ("/dev/tpmrm0", "/dev/tpm0")
_TPM_ALG_ECDSA = 0x0018
_COORDINATE = 32


def persistent_handle(alias: str) -> str:
    """``0x81`` + 6 hex digits of the first 4 bytes of SHA-256(alias) masked to 24 bits."""
    offset = int.from_bytes(hashlib.sha256(alias.encode("utf-8")).digest()[:4], "big") & 0xFFFFFF
    return f"0x81{offset:06x}"


def _bad_signature(detail: str) -> StoreError:
    return StoreError("tpm_failed", f"TPMT_SIGNATURE: {detail}")


def parse_tpmt_signature(data: bytes) -> bytes:
    """An ECDSA ``TPMT_SIGNATURE`` (tpm2-tools' default output) as 64-byte ``r || s``."""
    if len(data) < 2:
        raise _bad_signature("too short")
    scheme = int.from_bytes(data[:2], "big")
    if scheme != _TPM_ALG_ECDSA:
        raise _bad_signature(f"unexpected scheme 0x{scheme:x}")
    offset = 4  # scheme, then the hash algorithm (not needed)
    parts = []
    for name in ("r", "s"):
        if len(data) < offset + 2:
            raise _bad_signature(f"truncated before {name}")
        size = int.from_bytes(data[offset : offset + 2], "big")
        offset += 2
        if len(data) < offset + size:
            raise _bad_signature(f"truncated {name}")
        if size > _COORDINATE:
            raise _bad_signature("r or s exceeds 32 bytes")
        parts.append(data[offset : offset + size].rjust(_COORDINATE, b"\0"))
        offset += size
    return parts[0] + parts[1]


def signature_to_raw(output: bytes) -> bytes:
    """tpm2_sign output as low-S ``r || s``.

    ``-f plain`` writes DER for ECDSA with tpm2-tools 5.x (64 raw bytes with some
    builds); without it the output is a ``TPMT_SIGNATURE``. The reference handles
    only the raw and TPMT forms and never lowers S (W3).
    """
    if len(output) == 2 * _COORDINATE:
        raw = output
    elif output[:1] == b"\x30":
        try:
            return der_to_raw(output)
        except ValueError:
            raise StoreError(
                "tpm_failed", "tpm2_sign returned a malformed DER signature."
            ) from None
    else:
        raw = parse_tpmt_signature(output)
    return normalize_low_s(raw)


def pem_to_compressed(pem: str) -> bytes:
    """A P-256 SubjectPublicKeyInfo PEM (``tpm2_readpublic -f pem``) as a compressed point."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise StoreError(
            "tpm_failed", f"The TPM returned an unreadable public key: {exc}."
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise StoreError("tpm_failed", "The TPM returned a key that is not P-256.")
    return compress(key)


class TpmTools:
    """Runs ``tpm2_<subcommand>`` with a timeout; errors become :class:`StoreError`."""

    def __init__(
        self, environ: Mapping[str, str] | None = None, timeout: float = _TIMEOUT_SECONDS
    ) -> None:
        self._environ = None if environ is None else dict(environ)
        self._timeout = timeout

    def run(self, subcommand: str, *args: str) -> str:
        tool = f"tpm2_{subcommand}"
        try:
            completed = subprocess.run(
                [tool, *args],
                capture_output=True,
                text=True,
                timeout=self._timeout,
                env=self._environ,
                check=False,
            )
        except FileNotFoundError:
            raise StoreError(
                "backend_unavailable",
                f"tpm2-tools are not installed ({tool} not found); install them or use "
                "--backend encrypted-file.",
            ) from None
        except subprocess.TimeoutExpired:
            raise StoreError(
                "tpm_failed",
                f"{tool} did not finish within {self._timeout:g} s; "
                "check that the TPM (TPM2TOOLS_TCTI) is reachable.",
            ) from None
        if completed.returncode != 0:
            lines = completed.stderr.strip().splitlines()
            detail = lines[-1] if lines else f"exit status {completed.returncode}"
            raise StoreError(
                "tpm_failed", f"{tool} failed ({detail}); check the TPM and TPM2TOOLS_TCTI."
            )
        return completed.stdout

    def available(self) -> bool:
        """The reference's probe: Linux and ``tpm2_getcap properties-fixed`` succeeds."""
        return self.missing() is None

    def missing(self) -> str | None:
        """None when the TPM answers, else what is missing, named precisely (tools or device)."""
        if not sys.platform.startswith("linux"):
            return "not Linux"
        environ = os.environ if self._environ is None else self._environ
        if shutil.which("tpm2_getcap", path=environ.get("PATH", os.defpath)) is None:
            return "tpm2-tools not found"
        try:
            self.run("getcap", "properties-fixed")
        except StoreError:
            configured = environ.get("TPM2TOOLS_TCTI") or environ.get("TCTI")
            if configured is None and not any(Path(node).exists() for node in _TPM_NODES):
                return "tpm2-tools found, but no TPM device (/dev/tpmrm0)"
            return "tpm2-tools found, but the TPM did not answer tpm2_getcap"
        return None


class TpmSigner:
    """Signs with a persistent TPM key; the public key is read once."""

    def __init__(self, tools: TpmTools, alias: str, public_key: bytes) -> None:
        self._tools = tools
        self._handle = persistent_handle(alias)
        self._public_key = public_key

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @property
    def public_key_b64(self) -> str:
        return b64encode(self._public_key)

    @property
    def device_id(self) -> str:
        return device_id(self._public_key)

    def sign(self, message: bytes) -> bytes:
        with tempfile.TemporaryDirectory(prefix="amesh_") as work:
            message_path = Path(work, "msg")
            signature_path = Path(work, "sig")
            message_path.write_bytes(message)
            common = ("-c", self._handle, "-g", "sha256", "-s", "ecdsa")
            try:
                self._tools.run(
                    "sign", *common, "-f", "plain", "-o", str(signature_path), str(message_path)
                )
            except StoreError as plain_failure:
                if plain_failure.code != "tpm_failed":
                    raise
                # tpm2-tools 4.x has no -f plain: its default output is a TPMT_SIGNATURE.
                self._tools.run("sign", *common, "-o", str(signature_path), str(message_path))
            return signature_to_raw(signature_path.read_bytes())


class TpmKeyStore:
    """P-256 keys at persistent TPM handles; HMAC material from ``keys/<alias>.hmac``."""

    backend_name = TPM2

    def __init__(self, home: AmeshHome, tools: TpmTools | None = None) -> None:
        self._home = home
        self._tools = tools or TpmTools()
        self._signers: dict[str, TpmSigner] = {}

    def _flush_transient(self) -> None:
        # Without a resource manager (swtpm, /dev/tpm0) every tool leaves its transient
        # objects loaded and the TPM runs out of slots after three; with one
        # (/dev/tpmrm0) this flushes nothing that belongs to anyone else.
        with contextlib.suppress(StoreError):
            self._tools.run("flushcontext", "-t")

    def generate_and_store(self, alias: str) -> bytes:
        handle = persistent_handle(alias)
        with tempfile.TemporaryDirectory(prefix="amesh_") as work:
            primary, public, private, context, pem = (
                str(Path(work, name))
                for name in ("primary.ctx", "key.pub", "key.priv", "key.ctx", "key.pem")
            )
            steps = (
                ("createprimary", "-C", "o", "-g", "sha256", "-G", "ecc256", "-c", primary),
                ("create", "-C", primary, "-G", "ecc256", "-u", public, "-r", private),
                ("load", "-C", primary, "-u", public, "-r", private, "-c", context),
                ("evictcontrol", "-C", "o", "-c", context, handle),
            )
            try:
                for subcommand, *args in steps:
                    self._flush_transient()
                    self._tools.run(subcommand, *args)
            finally:
                self._flush_transient()
            self._tools.run("readpublic", "-c", handle, "-f", "pem", "-o", pem)
            public_key = pem_to_compressed(Path(pem).read_text(encoding="ascii"))
        self._signers[alias] = TpmSigner(self._tools, alias, public_key)
        return public_key

    def public_key(self, alias: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="amesh_") as work:
            pem = str(Path(work, "pub.pem"))
            self._tools.run("readpublic", "-c", persistent_handle(alias), "-f", "pem", "-o", pem)
            return pem_to_compressed(Path(pem).read_text(encoding="ascii"))

    def signer(self, alias: str) -> TpmSigner:
        if alias not in self._signers:
            self._signers[alias] = TpmSigner(self._tools, alias, self.public_key(alias))
        return self._signers[alias]

    def hmac_material(self, alias: str) -> bytes:
        return read_or_create_hmac_file(self._home, alias)

    def delete(self, alias: str) -> None:
        """Evict the persistent key (the ``.hmac`` file is left to the caller)."""
        self._signers.pop(alias, None)
        self._tools.run("evictcontrol", "-C", "o", "-c", persistent_handle(alias))

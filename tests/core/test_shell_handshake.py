"""Shell handshake primitives beyond the vectors: a full run with fresh keys and every refusal."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authmesh.core._allowlist import Device
from authmesh.core._b64 import b64encode
from authmesh.core._keys import PrivateKey
from authmesh.core._tunnel import seal_blob
from authmesh.core.shell._cipher import Role, ShellCipher
from authmesh.core.shell._frames import decode_frame, encode_data
from authmesh.core.shell._handshake import (
    MAX_ENVELOPE_LENGTH,
    HandshakeErrorCode,
    ShellHandshakeError,
    ShellIdentity,
    VerifiedPeer,
    authorize_peer,
    create_identity,
    derive_session_key,
    derive_temp_key,
    open_identity,
    parse_timestamp,
    seal_identity,
    selfsig_message,
    shared_secret,
    verify_identity,
)

NOW = datetime(2026, 4, 5, 12, 0, tzinfo=UTC)


class Party:
    """One side of a handshake: identity key, ephemeral key, name."""

    def __init__(self, name: str) -> None:
        self.identity = PrivateKey.generate()
        self.ephemeral = PrivateKey.generate()
        self.name = name

    def envelope_for(self, peer: Party, moment: datetime = NOW) -> ShellIdentity:
        return create_identity(
            self.identity,
            self.name,
            moment,
            own_ephemeral=self.ephemeral.public_key,
            peer_ephemeral=peer.ephemeral.public_key,
        )

    def verify(self, peer: Party, identity: ShellIdentity, now: datetime = NOW) -> VerifiedPeer:
        return verify_identity(
            identity,
            peer_ephemeral=peer.ephemeral.public_key,
            own_ephemeral=self.ephemeral.public_key,
            now=now,
        )


def _code(call: object) -> HandshakeErrorCode:
    assert callable(call)
    with pytest.raises(ShellHandshakeError) as caught:
        call()
    return caught.value.code


def _entry(party: Party, role: str, shell: bool | None) -> Device:
    return Device.new(
        device_id=party.identity.device_id,
        public_key=party.identity.public_key_b64,
        friendly_name=party.name,
        role=role,
        added_at="2026-04-05T11:00:00.000Z",
        shell=shell,
    )


def test_full_handshake_gives_both_sides_one_session_key() -> None:
    agent, controller = Party("prod-api ✓"), Party("alice-laptop")
    agent_secret = shared_secret(agent.ephemeral, controller.ephemeral.public_key)
    controller_secret = shared_secret(controller.ephemeral, agent.ephemeral.public_key)
    temp_key = derive_temp_key(agent_secret)
    assert temp_key == derive_temp_key(controller_secret)

    to_agent = seal_identity(temp_key, controller.envelope_for(agent))
    controller_peer = agent.verify(controller, open_identity(temp_key, to_agent))
    authorize_peer(Role.TARGET, _entry(controller, "controller", True))
    to_controller = seal_identity(temp_key, agent.envelope_for(controller))
    agent_peer = controller.verify(agent, open_identity(temp_key, to_controller))
    authorize_peer(Role.CONTROLLER, _entry(agent, "target", None))
    assert agent_peer.friendly_name == "prod-api ✓"

    keys = [
        derive_session_key(
            secret,
            target_device_id=agent.identity.device_id,
            controller_device_id=controller.identity.device_id,
        )
        for secret in (agent_secret, controller_secret)
    ]
    assert keys[0] == keys[1] != temp_key
    assert controller_peer.device_id == controller.identity.device_id
    sender, receiver = ShellCipher(keys[0], Role.TARGET), ShellCipher(keys[1], Role.CONTROLLER)
    assert decode_frame(receiver.decrypt(sender.encrypt(encode_data(b"$ ")))).payload == b"$ "


def test_envelopes_use_fresh_random_nonces() -> None:
    agent, controller = Party("a"), Party("c")
    identity = controller.envelope_for(agent)
    temp_key = bytes(32)
    assert seal_identity(temp_key, identity)[:12] != seal_identity(temp_key, identity)[:12]


@pytest.mark.parametrize(
    "peer_ephemeral",
    [
        b"",
        bytes(33),
        b"\x04" + bytes(64),
        PrivateKey.generate().key.public_key().public_numbers().x.to_bytes(32, "big"),
    ],
)
def test_invalid_ephemeral_is_refused(peer_ephemeral: bytes) -> None:
    own = PrivateKey.generate()
    assert _code(lambda: shared_secret(own, peer_ephemeral)) is HandshakeErrorCode.INVALID_EPHEMERAL


def test_uncompressed_ephemeral_is_refused() -> None:
    # The reference's curve library accepts a valid uncompressed point; its peers never send one.
    own, peer = PrivateKey.generate(), PrivateKey.generate()
    uncompressed = peer.key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert _code(lambda: shared_secret(own, uncompressed)) is HandshakeErrorCode.INVALID_EPHEMERAL


def test_envelope_failures() -> None:
    key = bytes(32)
    identity = Party("c").envelope_for(Party("a"))
    sealed = seal_identity(key, identity)
    assert (
        _code(lambda: open_identity(bytes(range(32)), sealed))
        is HandshakeErrorCode.ENVELOPE_UNREADABLE
    )
    assert _code(lambda: open_identity(key, sealed[:27])) is HandshakeErrorCode.ENVELOPE_UNREADABLE
    too_big = seal_blob(key, b" " * MAX_ENVELOPE_LENGTH)
    assert _code(lambda: open_identity(key, too_big)) is HandshakeErrorCode.ENVELOPE_MALFORMED
    for plaintext in (
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"publicKey":"x","deviceId":"y","friendlyName":"z","timestamp":"t"}',
        b'{"publicKey":1,"deviceId":"y","friendlyName":"z","timestamp":"t","selfSig":"s"}',
    ):
        blob = seal_blob(key, plaintext)
        assert (
            _code(lambda blob=blob: open_identity(key, blob))
            is HandshakeErrorCode.ENVELOPE_MALFORMED
        )


def test_unknown_envelope_fields_are_ignored() -> None:
    identity = ShellIdentity("p", "d", "n", "t", "s")
    text = identity.to_json()[:-1] + ',"extra":[1]}'
    assert ShellIdentity.from_json(text) == identity


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (timedelta(seconds=60), True),
        (timedelta(seconds=-60), True),
        (timedelta(seconds=60, milliseconds=1), False),
        (timedelta(seconds=-60, milliseconds=-1), False),
    ],
)
def test_timestamp_skew_is_inclusive_60s(offset: timedelta, accepted: bool) -> None:
    agent, controller = Party("a"), Party("c")
    identity = controller.envelope_for(agent)
    if accepted:
        agent.verify(controller, identity, now=NOW + offset)
    else:
        code = _code(lambda: agent.verify(controller, identity, now=NOW + offset))
        assert code is HandshakeErrorCode.TIMESTAMP_OUT_OF_RANGE


@pytest.mark.parametrize(
    "text",
    [
        "2026-04-05",
        "2026-04-05T12:00:00Z",
        "2026-04-05T12:00:00.000+00:00",
        "2026-13-05T12:00:00.000Z",
        "٢٠٢٦-04-05T12:00:00.000Z",  # other scripts' digits: \d and int() take them
    ],
)
def test_only_the_exact_iso_form_is_a_timestamp(text: str) -> None:
    # The reference accepts anything JavaScript's Date parser does; its peers only send
    # YYYY-MM-DDTHH:MM:SS.sssZ, so we accept only that.
    assert _code(lambda: parse_timestamp(text)) is HandshakeErrorCode.TIMESTAMP_INVALID


def test_lenient_timestamp_is_refused_even_when_signed() -> None:
    agent, controller = Party("a"), Party("c")
    identity = controller.envelope_for(agent)
    bare = "2026-04-05"
    resigned = b64encode(
        controller.identity.sign(
            selfsig_message(
                identity.public_key,
                identity.device_id,
                identity.friendly_name,
                bare,
                signer_ephemeral=controller.ephemeral.public_key,
                verifier_ephemeral=agent.ephemeral.public_key,
            )
        )
    )
    forged = dataclasses.replace(identity, timestamp=bare, self_sig=resigned)
    assert _code(lambda: agent.verify(controller, forged)) is HandshakeErrorCode.TIMESTAMP_INVALID


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("friendly_name", "alice\nx", HandshakeErrorCode.FIELD_INVALID),  # S6
        ("friendly_name", "bell\x07", HandshakeErrorCode.FIELD_INVALID),
        ("friendly_name", "csi\x9b", HandshakeErrorCode.FIELD_INVALID),
        ("friendly_name", "", HandshakeErrorCode.FIELD_INVALID),
        ("friendly_name", "n" * 257, HandshakeErrorCode.FIELD_INVALID),
        ("device_id", "am_x\n", HandshakeErrorCode.FIELD_INVALID),
        ("device_id", "am_AAAAAAAAAAAAAAAA", HandshakeErrorCode.DEVICE_ID_MISMATCH),  # S2
        ("public_key", "not base64!", HandshakeErrorCode.FIELD_INVALID),
        ("self_sig", "not base64!", HandshakeErrorCode.SELFSIG_INVALID),
        ("self_sig", b64encode(bytes(63)), HandshakeErrorCode.SELFSIG_INVALID),
    ],
)
def test_identity_field_refusals(field: str, value: str, code: HandshakeErrorCode) -> None:
    agent, controller = Party("a"), Party("c")
    identity = dataclasses.replace(controller.envelope_for(agent), **{field: value})
    assert _code(lambda: agent.verify(controller, identity)) is code


def test_non_canonical_public_key_text_is_refused() -> None:
    agent, controller = Party("a"), Party("c")
    identity = controller.envelope_for(agent)
    url_form = identity.public_key.replace("+", "-").replace("/", "_").rstrip("=")
    if url_form == identity.public_key:
        url_form = identity.public_key + "=="  # excess padding
    forged = dataclasses.replace(identity, public_key=url_form)
    assert _code(lambda: agent.verify(controller, forged)) is HandshakeErrorCode.FIELD_INVALID


def test_signature_from_another_handshake_is_refused() -> None:
    agent, controller, other_agent = Party("a"), Party("c"), Party("a2")
    identity = controller.envelope_for(other_agent)
    assert _code(lambda: agent.verify(controller, identity)) is HandshakeErrorCode.SELFSIG_INVALID


@pytest.mark.parametrize("name", ["", "two\nlines", "x" * 257])
def test_own_friendly_name_is_checked_before_signing(name: str) -> None:
    with pytest.raises(ValueError, match="rename the device"):
        Party(name).envelope_for(Party("peer"))


@pytest.mark.parametrize(
    ("local_role", "entry", "code"),
    [
        (Role.TARGET, None, HandshakeErrorCode.NOT_IN_ALLOW_LIST),
        (Role.TARGET, ("target", True), HandshakeErrorCode.NOT_A_CONTROLLER),
        (Role.TARGET, ("controller", False), HandshakeErrorCode.SHELL_NOT_GRANTED),
        (Role.TARGET, ("controller", None), HandshakeErrorCode.SHELL_NOT_GRANTED),
        (Role.CONTROLLER, None, HandshakeErrorCode.NOT_IN_ALLOW_LIST),
        (Role.CONTROLLER, ("controller", True), HandshakeErrorCode.NOT_A_TARGET),
    ],
)
def test_authorization_refusals(
    local_role: Role, entry: tuple[str, bool | None] | None, code: HandshakeErrorCode
) -> None:
    peer = Party("peer")
    device = None if entry is None else _entry(peer, *entry)
    with pytest.raises(ShellHandshakeError) as caught:
        authorize_peer(local_role, device)
    assert caught.value.code is code
    # One sentence for the user, and no device id in it (it ends up in logs).
    message = str(caught.value)
    assert message.endswith(".") and peer.identity.device_id not in message


def test_authorization_accepts() -> None:
    peer = Party("peer")
    authorize_peer(Role.TARGET, _entry(peer, "controller", True))
    authorize_peer(Role.CONTROLLER, _entry(peer, "target", None))

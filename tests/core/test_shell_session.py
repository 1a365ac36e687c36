"""The shell session rules on a fake clock: both sides of :mod:`authmesh.core.shell._session`.

The two objects talk to each other directly (what one queues, the other receives), so each
rule — start-up, keepalive, idle and grant deadlines, why a session ended — is checked without
a relay, a PTY or a wait. Property tests feed arbitrary orders of frames and events.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from authmesh.core._b64 import b64decode, b64encode
from authmesh.core.shell._cipher import Role, ShellCipher
from authmesh.core.shell._frames import (
    DATA_CHUNK_SIZE,
    FrameType,
    decode_frame,
    encode_command,
    encode_data,
    encode_exit,
    encode_frame,
    encode_ping,
    encode_resize,
)
from authmesh.core.shell._session import (
    AgentSession,
    CheckGrant,
    Close,
    ControllerSession,
    Note,
    Outcome,
    Output,
    ResizePty,
    StartShell,
    Stop,
    WritePty,
)
from authmesh.core.shell._wire import data_message

KEEPALIVE = 30.0


def _ciphers() -> tuple[ShellCipher, ShellCipher]:
    key = secrets.token_bytes(32)
    return ShellCipher(key, Role.CONTROLLER), ShellCipher(key, Role.TARGET)


def _controller(
    cipher: ShellCipher, command: str | None = None, size: tuple[int, int] | None = (100, 30)
) -> ControllerSession:
    return ControllerSession(
        cipher,
        now=0.0,
        keepalive_interval=KEEPALIVE,
        command=command,
        size=size,
        stdin_is_tty=False,
    )


def _agent(cipher: ShellCipher, idle: float = 60.0) -> AgentSession:
    return AgentSession(cipher, now=0.0, idle_timeout=idle)


def _messages(side: ControllerSession | AgentSession) -> list[dict[str, Any]]:
    return [json.loads(text) for text in iter(side.next_message, None)]


def _frames(side: ControllerSession | AgentSession, peer: ShellCipher) -> list[bytes]:
    """What ``side`` queued, opened with a copy of the peer's cipher."""
    return [peer.decrypt(_payload(message)) for message in _messages(side)]


def _payload(message: dict[str, Any]) -> bytes:
    return b64decode(message["payload"])


def _deliver(sender: ControllerSession | AgentSession, receiver: Any, now: float) -> list[Any]:
    actions: list[Any] = []
    for message in _messages(sender):
        actions += receiver.receive(message, now)
    return actions


def _sealed(cipher: ShellCipher, frame: bytes) -> dict[str, Any]:
    return json.loads(data_message(cipher.encrypt(frame)))


def test_interactive_start_resize_data_exit() -> None:
    c_cipher, a_cipher = _ciphers()
    controller, agent = _controller(c_cipher), _agent(a_cipher)
    assert _deliver(controller, agent, now=0.1) == [StartShell(100, 30, None, b"")]
    controller.input(b"ls\r")
    controller.resize(120, 40)
    assert _deliver(controller, agent, now=0.2) == [WritePty(b"ls\r"), ResizePty(120, 40)]
    agent.output(b"file\r\n", now=0.3)
    assert _deliver(agent, controller, now=0.3) == [Output(b"file\r\n")]
    close = agent.finish(3)
    assert close == Close(Outcome.EXITED, "shell exited", 3)
    messages = _messages(agent)
    assert messages[-1] == {"type": "done"}
    actions = controller.receive(messages[0], now=0.4)
    assert actions == [Close(Outcome.EXITED, "the remote shell exited", 3)]


def test_command_mode_starts_at_once_with_the_size_from_a_resize() -> None:
    c_cipher, a_cipher = _ciphers()
    controller, agent = _controller(c_cipher, "uptime", (90, 20)), _agent(a_cipher)
    assert _deliver(controller, agent, now=0.1) == [StartShell(90, 20, "uptime", b"")]


def test_a_silent_controller_gets_an_interactive_shell_after_the_first_frame_wait() -> None:
    _, a_cipher = _ciphers()
    agent = _agent(a_cipher)
    assert agent.next_deadline() == 2.0
    assert agent.tick(1.9) == []
    assert agent.tick(2.0) == [StartShell(80, 24, None, b"")]


def test_a_resize_shortens_the_wait_for_a_command() -> None:
    c_cipher, a_cipher = _ciphers()
    agent = _agent(a_cipher)
    assert agent.receive(_sealed(c_cipher, encode_resize(50, 10)), now=0.5) == []
    assert agent.next_deadline() == 0.75
    assert agent.tick(0.75) == [StartShell(50, 10, None, b"")]


def test_ping_is_answered_in_every_phase() -> None:
    c_cipher, a_cipher = _ciphers()
    agent = _agent(a_cipher)
    assert agent.receive(_sealed(c_cipher, encode_ping()), now=0.1) == []
    assert [decode_frame(f).type for f in _frames(agent, c_cipher)] == [FrameType.PONG]


def test_idle_timeout_stops_and_reports_exit() -> None:
    c_cipher, a_cipher = _ciphers()
    agent = _agent(a_cipher, idle=60)
    agent.tick(2.0)
    agent.output(b"x", now=30)  # output is activity
    _frames(agent, c_cipher)
    assert agent.tick(89) == [CheckGrant()]
    assert agent.tick(90) == [Stop(Outcome.STOPPED, "idle timeout")]
    assert agent.finish(129) == Close(Outcome.STOPPED, "idle timeout", 129)
    messages = _messages(agent)
    assert messages[-1] == {"type": "done"}
    assert c_cipher.decrypt(_payload(messages[0])) == encode_exit(129)


def test_revoked_grant_stops_the_session() -> None:
    _, a_cipher = _ciphers()
    agent = _agent(a_cipher)
    agent.tick(2.0)
    assert agent.tick(4.0) == [CheckGrant()]
    assert agent.revoked() == [Stop(Outcome.STOPPED, "shell access revoked")]
    assert agent.tick(100) == []


def test_a_tampered_frame_ends_the_agent_session_with_done_and_no_exit() -> None:
    c_cipher, a_cipher = _ciphers()
    agent = _agent(a_cipher)
    agent.tick(2.0)
    message = _sealed(c_cipher, encode_data(b"x"))
    raw = bytearray(_payload(message))
    raw[-1] ^= 1
    actions = agent.receive({"type": "data", "payload": b64encode(bytes(raw))}, now=3)
    assert len(actions) == 1 and isinstance(actions[0], Stop)
    assert actions[0].outcome is Outcome.TAMPERED
    assert agent.finish(1).outcome is Outcome.TAMPERED
    assert _messages(agent) == [{"type": "done"}]


def test_controller_gone_is_lost_and_nothing_more_is_sent() -> None:
    _, a_cipher = _ciphers()
    agent = _agent(a_cipher)
    agent.tick(2.0)
    stop = agent.receive({"type": "error", "code": "peer_disconnected"}, now=3)
    assert stop == [Stop(Outcome.LOST, "the controller disconnected")]
    assert agent.finish(0).outcome is Outcome.LOST
    assert _messages(agent) == []


def test_a_relay_error_code_cannot_drive_the_operators_terminal() -> None:
    """The code ends up in the controller's closing message; a hostile relay used to be able
    to put escape sequences there."""
    c_cipher, _ = _ciphers()
    controller = _controller(c_cipher)
    [close] = controller.receive({"type": "error", "code": "\x1b]0;owned\x07\x1b[2J"}, now=1)
    assert isinstance(close, Close) and close.outcome is Outcome.LOST
    assert close.reason.isprintable() and "?]0;owned??[2J" in close.reason


def test_command_after_the_start_is_ignored() -> None:
    c_cipher, a_cipher = _ciphers()
    agent = _agent(a_cipher)
    agent.tick(2.0)
    actions = agent.receive(_sealed(c_cipher, encode_command("id")), now=3)
    assert actions and isinstance(actions[0], Note)


def test_controller_keepalive_pings_and_gives_up_after_three_silent_intervals() -> None:
    c_cipher, a_cipher = _ciphers()
    controller = _controller(c_cipher)
    _frames(controller, a_cipher)
    assert controller.next_deadline() == KEEPALIVE
    assert controller.tick(KEEPALIVE) == []
    assert [decode_frame(f).type for f in _frames(controller, a_cipher)] == [FrameType.PING]
    controller.tick(2 * KEEPALIVE)
    actions = controller.tick(3 * KEEPALIVE)
    assert len(actions) == 1 and isinstance(actions[0], Close)
    assert actions[0].outcome is Outcome.LOST and controller.closed == actions[0]


def test_any_frame_from_the_target_resets_the_keepalive() -> None:
    c_cipher, a_cipher = _ciphers()
    controller = _controller(c_cipher)
    controller.receive(_sealed(a_cipher, encode_data(b"hi")), now=80)
    assert controller.tick(3 * KEEPALIVE) == []


def test_relay_end_reasons_and_ignored_types_on_the_controller() -> None:
    c_cipher, _ = _ciphers()
    controller = _controller(c_cipher)
    assert controller.receive({"type": "pong"}, now=1) == []
    assert controller.receive({"type": "done"}, now=1) == [
        Close(Outcome.LOST, "the target ended the session")
    ]
    assert controller.receive({"type": "done"}, now=1) == []  # closed stays closed


def test_piped_input_ends_with_ctrl_d_and_large_input_is_chunked() -> None:
    c_cipher, a_cipher = _ciphers()
    controller = _controller(c_cipher, size=None)
    _frames(controller, a_cipher)
    controller.input(b"x" * (DATA_CHUNK_SIZE + 1))
    controller.input_ended()
    frames = [decode_frame(f) for f in _frames(controller, a_cipher)]
    assert [len(f.payload) for f in frames] == [DATA_CHUNK_SIZE, 1, 1]
    assert frames[-1].payload == b"\x04"


# Property tests: arbitrary orders of frames and events never break the invariants.

_controller_frames = st.sampled_from(
    [
        encode_data(b"in"),
        encode_data(b""),
        encode_resize(80, 24),
        encode_resize(0, 0),
        encode_command("id"),
        encode_ping(),
        encode_frame(FrameType.PONG),
        encode_frame(FrameType.RESIZE, b"\x01"),  # too short
        encode_frame(FrameType.COMMAND, b"\xff"),  # not UTF-8
    ]
)
_agent_events = st.one_of(
    st.tuples(st.just("frame"), _controller_frames),
    st.tuples(st.just("tick"), st.floats(0, 5)),
    st.tuples(st.just("output"), st.binary(max_size=8)),
    st.tuples(st.just("relay"), st.sampled_from(["done", "peer_disconnected", "pong", "x"])),
    st.tuples(st.just("tamper"), st.just(b"")),
)


@settings(max_examples=200)
@given(st.lists(_agent_events, max_size=30))
def test_agent_session_invariants_for_any_event_order(events: list[tuple[str, Any]]) -> None:
    c_cipher, a_cipher = _ciphers()
    agent = _agent(a_cipher, idle=10)
    now = 0.0
    starts = stops = 0
    for kind, value in events:
        if kind == "frame":
            actions = agent.receive(_sealed(c_cipher, value), now)
        elif kind == "tick":
            now += value
            actions = agent.tick(now)
        elif kind == "output":
            agent.output(value, now)
            actions = []
        elif kind == "relay":
            actions = agent.receive({"type": value, "code": value}, now)
        else:
            actions = agent.receive({"type": "data", "payload": "AAAA"}, now)
        starts += sum(isinstance(a, StartShell) for a in actions)
        stops += sum(isinstance(a, Stop) for a in actions)
        assert starts <= 1 and stops <= 1
        if stops:
            assert agent.next_deadline() is None
    close = agent.finish(0)
    messages = _messages(agent)
    # Whatever happened, every frame the agent queued opens in order on the controller.
    for message in messages:
        if message["type"] == "data":
            decode_frame(c_cipher.decrypt(_payload(message)))
    # The controller hears `done` unless it (or the relay) is the one that went away.
    assert (messages[-1:] == [{"type": "done"}]) == (close.outcome is not Outcome.LOST)


_agent_frames = st.sampled_from(
    [encode_data(b"out"), encode_exit(7), encode_ping(), encode_frame(FrameType.PONG)]
)


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("frame"), _agent_frames),
            st.tuples(st.just("tick"), st.floats(0, 40)),
            st.tuples(st.just("input"), st.binary(max_size=8)),
        ),
        max_size=30,
    )
)
def test_controller_session_ends_once_and_only_exit_is_success(
    events: list[tuple[str, Any]],
) -> None:
    c_cipher, a_cipher = _ciphers()
    controller = _controller(c_cipher)
    now = 0.0
    closes: list[Close] = []
    outputs = 0
    for kind, value in events:
        if kind == "frame":
            actions = controller.receive(_sealed(a_cipher, value), now)
        elif kind == "tick":
            now += value
            actions = controller.tick(now)
        else:
            controller.input(value)
            actions = []
        closes += [a for a in actions if isinstance(a, Close)]
        outputs += sum(isinstance(a, Output) for a in actions)
        assert len(closes) <= 1
    exits = [v for k, v in events if k == "frame" and v == encode_exit(7)]
    if closes and closes[0].outcome is Outcome.EXITED:
        assert closes[0].status == 7 and exits
    for message in _messages(controller):
        decode_frame(a_cipher.decrypt(_payload(message)))

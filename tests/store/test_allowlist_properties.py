"""Property tests of the allow-list seal: what we write reads back; any edit is caught."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authmesh.core import _allowlist as allowlist
from authmesh.core._jsoncanon import parse, pretty_stringify

KEY = allowlist.derive_allow_list_key(b"\xab" * 32, "am_mydevice123")
NOW = "2026-04-10T12:00:00.000Z"

entries = st.fixed_dictionaries(
    {
        "deviceId": st.text(max_size=20),
        "publicKey": st.text(max_size=44),
        "friendlyName": st.text(max_size=30),
        "addedAt": st.text(max_size=24),
        "addedBy": st.sampled_from(["handshake", "manual"]),
        "role": st.sampled_from(["controller", "target"]),
    },
    optional={
        "permissions": st.fixed_dictionaries({"shell": st.booleans()}),
        "protocol": st.sampled_from([1, 2]),
        "extra": st.floats(allow_nan=False, allow_infinity=False) | st.integers(),
    },
)
lists = st.builds(
    lambda devices, updated: allowlist.AllowList(
        tuple(allowlist.Device(d) for d in devices),
        updated,
        allowlist.AllowList.empty(updated).top,
    ),
    st.lists(entries, max_size=4),
    st.text(max_size=24),
)


@given(lists)
def test_rendered_lists_read_back_unchanged(allow_list: allowlist.AllowList) -> None:
    text = allow_list.render(KEY)
    result = allowlist.read(text, KEY, NOW)
    assert not result.needs_reseal
    assert result.allow_list.render(KEY) == text


@given(lists, st.data())
def test_any_edit_to_a_device_breaks_the_seal(
    allow_list: allowlist.AllowList, data: st.DataObject
) -> None:
    if not allow_list.devices:
        return
    document: Any = parse(allow_list.render(KEY))
    device = data.draw(st.sampled_from(document["devices"]))
    field = data.draw(st.sampled_from(["deviceId", "publicKey", "friendlyName", "role"]))
    replacement = data.draw(st.text(min_size=1, max_size=10).filter(lambda v: v != device[field]))
    device[field] = replacement
    with pytest.raises(allowlist.IntegrityError) as failure:
        allowlist.read(pretty_stringify(document), KEY, NOW)
    assert failure.value.seal_mismatch


@given(st.text(max_size=40))
def test_garbage_is_an_integrity_error_never_a_crash(text: str) -> None:
    with pytest.raises(allowlist.IntegrityError):
        allowlist.read(text, KEY, NOW)

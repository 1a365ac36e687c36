"""The one-regex path of ``parse_header`` agrees with the reference's left-to-right scan."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from authmesh.core._header import FIELD_CAPS, AuthHeader, HeaderError, parse_header

ASCII_NO_QUOTE = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"')


def _field(key: str) -> st.SearchStrategy[str]:
    return st.text(ASCII_NO_QUOTE, min_size=0, max_size=FIELD_CAPS[key] + 2)


@given(st.fixed_dictionaries({key: _field(key) for key in FIELD_CAPS}))
def test_formatted_and_reordered_headers_parse_alike(fields: dict[str, str]) -> None:
    formatted = "AuthMesh " + ",".join(f'{key}="{value}"' for key, value in fields.items())
    reordered = "AuthMesh " + ",".join(
        f'{key}="{value}"' for key, value in reversed(fields.items())
    )

    def outcome(value: str) -> AuthHeader | str:
        try:
            return parse_header(value)
        except HeaderError as error:
            return error.reason

    assert outcome(formatted) == outcome(reordered)
    if all(0 < len(value) <= FIELD_CAPS[key] for key, value in fields.items()):
        assert outcome(formatted) == AuthHeader(**fields)

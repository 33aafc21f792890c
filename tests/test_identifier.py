import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import InvalidHandle
from protocol.identifier import (
    parent_prefixes,
    parse_handle,
    parse_prefix,
    prefix_handle,
)


def test_parse_keeps_spelling_and_normalises_key():
    h = parse_handle("88.118.8/Product-2024-000123")
    assert h.text == "88.118.8/Product-2024-000123"
    assert (h.prefix, h.suffix) == ("88.118.8", "Product-2024-000123")
    assert h.key == "88.118.8/PRODUCT-2024-000123"


def test_case_sensitive_suffix_keeps_suffix_but_not_prefix():
    h = parse_handle("test/Mixed", case_sensitive=True)
    assert h.key == "TEST/Mixed"


def test_suffix_may_contain_slashes():
    h = parse_handle("88.1/a/b/")
    assert h.suffix == "a/b/"


@pytest.mark.parametrize(
    "text",
    ["", "88.1", "/x", "88.1/", "88.1/a\x00b", "88.1/a\nb", "88.1/\x7f", ".88/x", "88..1/x",
     "88./x", "88.1/" + "x" * 252],
)
def test_rejects(text):
    with pytest.raises(InvalidHandle) as info:
        parse_handle(text)
    assert info.value.rc == 102


def test_length_counts_utf8_bytes():
    parse_handle("88.1/" + "x" * 250)  # 255 bytes
    with pytest.raises(InvalidHandle):
        parse_handle("88.1/" + "é" * 126)  # 5 + 252 bytes


def test_prefix_helpers():
    assert parse_prefix("0.na/88.100.1") == "88.100.1"
    assert prefix_handle("88.abc") == "0.NA/88.ABC"
    assert parent_prefixes("88.118.8") == ["88.118.8", "88.118", "88"]
    with pytest.raises(InvalidHandle):
        parse_prefix("88/1")


@given(
    st.text(alphabet=st.characters(blacklist_characters="/"), min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
)
def test_parse_never_raises_anything_but_invalid_handle(prefix, suffix):
    try:
        h = parse_handle(f"{prefix}/{suffix}")
    except InvalidHandle:
        return
    assert h.text == f"{prefix}/{suffix}"
    assert h.key.split("/", 1)[0] == prefix.upper()

"""Key loading: from a hex file or the environment, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinic.keys import REGISTRY_KEY_ENV, load_registry_key, load_site_key
from contract.ids import SITE_KEY_ENV


def test_file_wins_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REGISTRY_KEY_ENV, "11" * 32)
    key_file = tmp_path / "k.hex"
    key_file.write_text("22" * 16 + "\n" + "22" * 16 + "\n")
    assert load_registry_key(key_file) == b"\x22" * 32
    assert load_registry_key(None) == b"\x11" * 32


@pytest.mark.parametrize(
    ("value", "needle"),
    [("zz" * 32, "hex digits"), ("11" * 31, "31 bytes, need 32")],
)
def test_bad_registry_key_named(monkeypatch: pytest.MonkeyPatch, value: str, needle: str) -> None:
    monkeypatch.setenv(REGISTRY_KEY_ENV, value)
    with pytest.raises(ValueError, match=needle) as info:
        load_registry_key(None)
    assert REGISTRY_KEY_ENV in str(info.value)


def test_missing_keys_say_where_to_put_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REGISTRY_KEY_ENV, raising=False)
    monkeypatch.delenv(SITE_KEY_ENV, raising=False)
    with pytest.raises(ValueError, match=REGISTRY_KEY_ENV):
        load_registry_key(None)
    with pytest.raises(ValueError, match=SITE_KEY_ENV):
        load_site_key(None)
    with pytest.raises(ValueError, match="cannot read site key file"):
        load_site_key(tmp_path / "absent.hex")


def test_site_key_has_a_minimum_not_an_exact_length(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SITE_KEY_ENV, "ab" * 24)
    assert load_site_key(None) == b"\xab" * 24
    monkeypatch.setenv(SITE_KEY_ENV, "ab" * 8)
    with pytest.raises(ValueError, match="at least 16"):
        load_site_key(None)

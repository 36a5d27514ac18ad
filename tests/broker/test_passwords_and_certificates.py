"""Password hashes in Mosquitto's own format and the CA / server certificate, checked without a broker.

That Mosquitto accepts our hashes and certificates is shown by every connection in
test_access_control.py; here `mosquitto_passwd` (where installed) cross-checks the format.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from broker.certificates import certificate_names, make_ca, make_server_cert
from broker.passwords import (
    PBKDF2_ITERATIONS,
    hash_password,
    new_password,
    parse_password_file,
    render_password_file,
    verify_password,
)


def test_hash_has_mosquitto_2_layout() -> None:
    stored = hash_password("s3cret", salt=b"\x01" * 12)
    _, kind, iterations, salt, digest = stored.split("$")
    assert (kind, int(iterations)) == ("7", PBKDF2_ITERATIONS)
    assert base64.b64decode(salt) == b"\x01" * 12
    assert base64.b64decode(digest) == hashlib.pbkdf2_hmac("sha512", b"s3cret", b"\x01" * 12, 101)
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret!", stored)
    assert hash_password("s3cret") != hash_password("s3cret")  # fresh salt each time


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")
@pytest.mark.parametrize("algorithm", ["sha512-pbkdf2", "sha512"])
def test_hashes_written_by_mosquitto_passwd_verify(tmp_path: Path, algorithm: str) -> None:
    path = tmp_path / "pw"
    path.touch()
    subprocess.run(["mosquitto_passwd", "-H", algorithm, "-b", str(path), "alice", "open sesame"], check=True)
    entries = parse_password_file(path.read_text())
    assert entries["alice"].startswith("$7$" if algorithm == "sha512-pbkdf2" else "$6$")
    assert verify_password("open sesame", entries["alice"])
    assert not verify_password("open sesame ", entries["alice"])


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")
def test_mosquitto_passwd_edits_our_file(tmp_path: Path) -> None:
    """Our file is one Mosquitto's own tool reads and rewrites without complaint."""
    path = tmp_path / "pw"
    ours = hash_password("pw-of-bob")
    path.write_text(render_password_file({"bob": ours}))
    subprocess.run(["mosquitto_passwd", "-b", str(path), "carol", "pw-of-carol"], check=True)
    entries = parse_password_file(path.read_text())
    assert entries["bob"] == ours
    assert verify_password("pw-of-carol", entries["carol"])


def test_password_file_round_trip_and_errors() -> None:
    entries = {"pi-1": hash_password("a"), "bridge.main": hash_password("b")}
    assert parse_password_file(render_password_file(entries)) == entries
    assert render_password_file({}) == ""
    with pytest.raises(ValueError, match="line 2"):
        parse_password_file("pi-1:$7$1$a$b\nno-colon-here\n")
    with pytest.raises(ValueError, match="cannot go in"):
        render_password_file({"a:b": "x"})


def test_new_passwords_are_long_and_distinct() -> None:
    passwords = {new_password() for _ in range(50)}
    assert len(passwords) == 50
    assert all(len(p) >= 32 for p in passwords)


def test_server_certificate_is_signed_by_the_ca_for_the_right_names() -> None:
    ca = make_ca()
    server = make_server_cert(ca, ["mosquitto", "10.0.0.5", "Broker.LAN"])
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    cert = x509.load_pem_x509_certificate(server.cert_pem)
    cert.verify_directly_issued_by(ca_cert)
    names = certificate_names(server.cert_pem)
    assert set(names) == {"localhost", "mosquitto", "broker.lan", "127.0.0.1", "::1", "10.0.0.5"}
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc <= ca_cert.not_valid_after_utc
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)


@pytest.mark.parametrize("bad", ["", "bad name", "under_score.example", "a..b"])
def test_invalid_hostnames_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="hostname"):
        make_server_cert(make_ca(), [bad])


def test_provisioning_writes_secrets_0600_and_tightens_restored_ones(tmp_path: Path) -> None:
    """A re-imaged SD card gives the broker's keys back 0644: the next provisioning command tightens them."""
    import os
    import stat

    from broker.provisioning import add_device, init_broker

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    old = os.umask(0)
    try:
        files = init_broker(tmp_path / "broker")
    finally:
        os.umask(old)
    secrets = [files.ca_key, files.server_key, files.passwords, files.acl, files.registry, files.site_key]
    assert {p.name: mode(p) for p in secrets} == {p.name: 0o600 for p in secrets}
    assert mode(files.root) == 0o700
    assert mode(files.ca_cert) == 0o644
    for path in secrets:
        path.chmod(0o644)
    add_device(files.root, "dev-01")
    assert {p.name: mode(p) for p in secrets} == {p.name: 0o600 for p in secrets}

"""PINGSTREAM_SQL_TLS_CERT / _KEY and the TLS ports of the SQL endpoint, as the configuration reads them."""

from __future__ import annotations

import ssl

import pytest
import trustme

from runtime.config import Config, ConfigError, tls_server_context


@pytest.fixture
def pair(tmp_path):
    issued = trustme.CA().issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


def test_without_a_certificate_nothing_is_served_over_tls():
    config = Config.from_env({})
    assert config.sql_tls_cert is None and config.sql_tls_key is None
    assert (config.sql_https_port, config.sql_native_tls_port) == (8444, 9441)  # used once a certificate is given


def test_a_certificate_and_its_key_give_the_tls_ports(pair):
    cert, key = pair
    config = Config.from_env({"PINGSTREAM_SQL_TLS_CERT": str(cert), "PINGSTREAM_SQL_TLS_KEY": str(key),
                              "PINGSTREAM_SQL_HTTPS_PORT": "0", "PINGSTREAM_SQL_NATIVE_TLS_PORT": "off"})
    assert (config.sql_tls_cert, config.sql_tls_key) == (cert, key)
    assert (config.sql_https_port, config.sql_native_tls_port) == (0, None)
    context = tls_server_context(cert, key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2 and not context.check_hostname


def test_one_without_the_other_and_a_wrong_pair_are_configuration_errors(pair, tmp_path):
    cert, key = pair
    with pytest.raises(ConfigError, match="PINGSTREAM_SQL_TLS_CERT: not set"):
        Config.from_env({"PINGSTREAM_SQL_TLS_KEY": str(key)})
    with pytest.raises(ConfigError, match="PINGSTREAM_SQL_TLS_KEY=.*missing.pem: no such file"):
        Config.from_env({"PINGSTREAM_SQL_TLS_CERT": str(cert), "PINGSTREAM_SQL_TLS_KEY": str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError, match="cannot be served: KEY_VALUES_MISMATCH"):
        other = trustme.CA().issue_cert("127.0.0.1")
        other.private_key_pem.write_to_path(str(tmp_path / "other.pem"))
        Config.from_env({"PINGSTREAM_SQL_TLS_CERT": str(cert), "PINGSTREAM_SQL_TLS_KEY": str(tmp_path / "other.pem")})
    with pytest.raises(ConfigError, match="cannot be served: not a PEM certificate chain and its private key"):
        Config.from_env({"PINGSTREAM_SQL_TLS_CERT": str(key), "PINGSTREAM_SQL_TLS_KEY": str(key)})

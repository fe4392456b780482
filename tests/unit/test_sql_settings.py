"""The SQL endpoint's settings and the installation's admin key."""

from __future__ import annotations

import os
import stat

import pytest

from runtime import adminkey
from runtime.config import Config, ConfigError


def test_the_sql_port_defaults_to_8124_and_turns_off_with_off():
    assert Config.from_env({}).sql_port == 8124
    assert Config.from_env({"PINGSTREAM_SQL_PORT": "off"}).sql_port is None
    assert Config.from_env({"PINGSTREAM_SQL_PORT": "0"}).sql_port == 0
    assert Config.from_env({}).sql_host == "127.0.0.1"


@pytest.mark.parametrize("env", [{"PINGSTREAM_SQL_PORT": "no"}, {"PINGSTREAM_SQL_PORT": "70000"},
                                 {"PINGSTREAM_SQL_MAX_RESULT_ROWS": "100"},
                                 {"PINGSTREAM_SQL_MAX_EXECUTION_TIME_S": "0"}])
def test_it_refuses_bad_sql_settings_naming_the_variable(env):
    with pytest.raises(ConfigError, match=next(iter(env))):
        Config.from_env(env)


def test_the_admin_key_is_made_once_readable_by_its_owner_only(tmp_path):
    assert adminkey.read(tmp_path) is None
    key, created = adminkey.load_or_create(tmp_path)
    assert created and len(key) >= 32
    assert stat.S_IMODE(os.stat(adminkey.path(tmp_path)).st_mode) == 0o600
    assert adminkey.load_or_create(tmp_path) == (key, False)
    assert [p.name for p in tmp_path.iterdir()] == [adminkey.FILE_NAME]  # no temporary file left


def test_the_admin_key_matches_only_itself():
    assert adminkey.matches("k" * 32, "k" * 32)
    assert not adminkey.matches("k" * 32, "k" * 31 + "x")
    assert not adminkey.matches("k" * 32, None)
    assert not adminkey.matches("k" * 32, "")

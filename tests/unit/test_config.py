"""Configuration from OMNICAST_* variables and a TOML file, with errors that name the setting."""

from __future__ import annotations

import pytest

from chalicelib.config import load_settings
from chalicelib.errors import ConfigError


def test_defaults_are_the_embedded_runtime():
    s = load_settings({})
    assert s.runtime == "local" and s.plugins.allow is None and s.plugins.block == []


def test_environment_nesting_and_lists():
    s = load_settings({
        "OMNICAST_RUNTIME": "aws",
        "OMNICAST_AWS__TABLE": "shop-prod",
        "OMNICAST_CHANNELS__EMAIL": "smtp",
        "OMNICAST_PLUGINS__BLOCK": "sandbox, foo ,",
        "OMNICAST_PLUGIN_SETTINGS__SMTP__PORT": "2525",
        "OMNICAST_SEND_POLICY__QUIET_START_HOUR": "22",
        "UNRELATED": "x",
    })
    assert s.runtime == "aws" and s.aws.table == "shop-prod"
    assert s.channels == {"email": "smtp"}
    assert s.plugins.block == ["sandbox", "foo"]
    assert s.plugin_settings["smtp"]["port"] == "2525"  # the plugin's own model types it
    assert s.send_policy.quiet_start_hour == 22


def test_file_then_environment_wins(tmp_path):
    path = tmp_path / "omnicast.toml"
    path.write_text('runtime = "aws"\n[aws]\ntable = "from-file"\nbucket = "b"\n')
    s = load_settings({"OMNICAST_CONFIG": str(path), "OMNICAST_AWS__TABLE": "from-env"})
    assert s.aws.table == "from-env" and s.aws.bucket == "b"


def test_config_file_in_the_data_dir_is_found(tmp_path):
    (tmp_path / "omnicast.toml").write_text('max_body_bytes = 1000\n')
    assert load_settings({"OMNICAST_DATA_DIR": str(tmp_path)}).max_body_bytes == 1000


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OMNICAST_RUNTIME": "gcp"}, "runtime: Input should be 'local' or 'aws'"),
        ({"OMNICAST_SEND_POLICY__QUIET_END_HOUR": "25"}, "send_policy.quiet_end_hour"),
        ({"OMNICAST_AWS__TABEL": "x"}, "aws.tabel: unknown setting"),
        ({"OMNICAST_MAX_BODY_BYTES": "-1"}, "max_body_bytes"),
        ({"OMNICAST_CONFIG": "/nonexistent/omnicast.toml"}, "config file not found"),
    ],
)
def test_errors_name_the_setting(env, message):
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert message in err.value.message


def test_invalid_toml_is_reported_with_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("runtime = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings({"OMNICAST_CONFIG": str(path)})

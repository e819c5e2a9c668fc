"""Settings precedence (argument, environment, default) and named configuration errors."""

from __future__ import annotations

import pytest

from relay import constants as c
from relay.errors import ConfigurationError
from relay.settings import TABLE, Settings


def test_defaults():
    s = Settings.load({})
    assert s.itwin_api_url == "https://api.bentley.com"
    assert s.aps_api_url == "https://developer.api.autodesk.com"
    assert s.max_upload_bytes == 30 * 1024 * 1024
    assert s.allowed_upload_hosts == frozenset()


def test_environment_beats_default_and_argument_beats_environment():
    env = {c.ITWIN_API_URL_ENV: "https://env.example/", c.MAX_UPLOAD_BYTES_ENV: "100"}
    assert Settings.load(env).itwin_api_url == "https://env.example"
    assert Settings.load(env).max_upload_bytes == 100
    assert Settings.load(env, itwin_api_url="https://arg.example").itwin_api_url == "https://arg.example"
    assert Settings.load(env, max_upload_bytes=5).max_upload_bytes == 5


def test_allowed_hosts_are_split_and_lowercased():
    s = Settings.load({c.ALLOWED_UPLOAD_HOSTS_ENV: " Files.Bentley.com, ,cdn.example:8443"})
    assert s.allowed_upload_hosts == {"files.bentley.com", "cdn.example:8443"}


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        (c.ITWIN_API_URL_ENV, "api.bentley.com", c.ITWIN_API_URL_ENV),
        (c.APS_API_URL_ENV, "ftp://x", c.APS_API_URL_ENV),
        (c.MAX_UPLOAD_BYTES_ENV, "thirty", c.MAX_UPLOAD_BYTES_ENV),
        (c.MAX_UPLOAD_BYTES_ENV, "-1", c.MAX_UPLOAD_BYTES_ENV),
        (c.HTTP_READ_TIMEOUT_ENV, "0", c.HTTP_READ_TIMEOUT_ENV),
    ],
)
def test_bad_values_name_the_variable(name, value, fragment):
    with pytest.raises(ConfigurationError) as info:
        Settings.load({name: value})
    assert fragment in str(info.value)


def test_required_setting_names_the_variable():
    with pytest.raises(ConfigurationError, match=c.ITWIN_SECRET_ID_ENV):
        Settings.load({}).require("itwin_secret_id")


def test_every_field_has_one_row_and_a_prefixed_variable():
    assert all(spec.env.startswith("RELAY_") for spec in TABLE.values())
    assert len({spec.env for spec in TABLE.values()}) == len(TABLE)
    assert Settings.load({}) == Settings()  # the table's defaults are the dataclass's


def test_unknown_explicit_setting_is_refused():
    with pytest.raises(TypeError, match="no_such"):
        Settings.load({}, no_such=1)

# The `s3` store type in [[stores]]: parsing, validation and where credentials come from
# (config.py is the only parser; the environment is passed in, never read by the engine).
from __future__ import annotations

from pathlib import Path

import pytest

from tessera import config as config_mod
from tessera.config import ConfigError

S3 = '''
[[stores]]
id = "local"
default = true

[[stores]]
id = "bucket"
type = "s3"
endpoint = "http://127.0.0.1:7480"
bucket = "tessera-images"
'''
ENV = {"AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "sk", "HOME": "/nowhere"}


def load(tmp_path: Path, text: str, env: dict | None = None) -> config_mod.Config:
    path = tmp_path / "tessera.toml"
    path.write_text(text)
    return config_mod.load(path, data_dir=str(tmp_path / "data"), env=env)


def s3_store(cfg: config_mod.Config):
    return next(sc for sc in cfg.engine.stores if sc.type == "s3")


def test_s3_store_parses_with_defaults_and_env_credentials(tmp_path):
    sc = s3_store(load(tmp_path, S3, ENV))
    assert (sc.id, sc.endpoint, sc.bucket) == ("bucket", "http://127.0.0.1:7480",
                                               "tessera-images")
    assert (sc.region, sc.prefix, sc.credentials_file) == ("us-east-1", "", None)
    assert (sc.access_key, sc.secret_key, sc.session_token) == ("ak", "sk", None)
    assert "sk" not in repr(sc)                       # secrets stay out of logs


def test_all_s3_keys(tmp_path):
    text = S3 + 'region = "eu-west-3"\nprefix = "tessera/"\ncredentials_file = "/etc/creds"\n'
    sc = s3_store(load(tmp_path, text, ENV))
    assert (sc.region, sc.prefix, sc.credentials_file) == ("eu-west-3", "tessera/",
                                                           "/etc/creds")
    # a credentials file wins: the environment's keys are not taken
    assert sc.access_key is None and sc.secret_key is None


def test_without_env_there_are_no_keys(tmp_path):
    sc = s3_store(load(tmp_path, S3))
    assert sc.access_key is None


@pytest.mark.parametrize("drop, message", [
    ('endpoint = "http://127.0.0.1:7480"\n', "needs an endpoint"),
    ('bucket = "tessera-images"\n', "needs a bucket"),
])
def test_missing_endpoint_or_bucket_is_a_clear_error(tmp_path, drop, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, S3.replace(drop, ""), ENV)


@pytest.mark.parametrize("key, value, message", [
    ("endpoint", '"127.0.0.1:7480"', "must be an http:// or https:// URL"),
    ("endpoint", '"ftp://host"', "must be an http:// or https:// URL"),
    ("bucket", '"Upper_Case"', "not a valid S3 bucket name"),
    ("bucket", '"ab"', "not a valid S3 bucket name"),
    ("region", '""', "region must not be empty"),
    ("prefix", '"/abs"', "prefix must not start with /"),
    ("endpoint", "7480", "endpoint must be str"),
])
def test_invalid_values(tmp_path, key, value, message):
    text = S3.replace(f'{key} = ', f'old_{key} = ') if key in ("endpoint", "bucket") else S3
    text = text.replace(f"old_{key} = ", "# ") + f"{key} = {value}\n"
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text, ENV)


@pytest.mark.parametrize("key", ["access_key", "secret_key", "session_token"])
def test_secrets_cannot_be_in_the_file(tmp_path, key):
    with pytest.raises(ConfigError, match="cannot be set in the file"):
        load(tmp_path, S3 + f'{key} = "x"\n', ENV)


def test_s3_keys_on_a_local_store_are_refused(tmp_path):
    text = '[[stores]]\nid = "a"\nendpoint = "http://127.0.0.1:1"\n'
    with pytest.raises(ConfigError, match="only apply to type s3"):
        load(tmp_path, text)


def test_unknown_type_names_the_supported_ones(tmp_path):
    with pytest.raises(ConfigError, match="local, http, s3"):
        load(tmp_path, S3.replace('type = "s3"', 'type = "swift"'), ENV)


def test_rendered_config_loads_back_without_secrets(tmp_path):
    cfg = load(tmp_path, S3 + 'prefix = "p/"\n', ENV)
    text = config_mod.render(cfg)
    assert "sk" not in text.split("[[stores]]", 1)[1].replace("tessera-images", "")
    again = load(tmp_path, text, ENV)
    assert s3_store(again) == s3_store(cfg)


def test_request_bounds(tmp_path):
    text = S3 + "connect_timeout = 1.5\nread_timeout = 4\nretry_time = 0\n"
    sc = s3_store(load(tmp_path, text, ENV))
    assert (sc.connect_timeout, sc.read_timeout, sc.retry_time) == (1.5, 4, 0)
    default = s3_store(load(tmp_path, S3, ENV))
    assert (default.connect_timeout, default.read_timeout, default.retry_time) == (5.0, 30.0,
                                                                                   30.0)
    with pytest.raises(ConfigError, match="read_timeout must be > 0"):
        load(tmp_path, S3 + "read_timeout = 0\n", ENV)
    with pytest.raises(ConfigError, match="retry_time must be >= 0"):
        load(tmp_path, S3 + "retry_time = -1.0\n", ENV)

# The http store and the location options in the TOML configuration: accepted as Glance's
# read-only store, refused as the default or with a path, rendered back loadable.
from __future__ import annotations

import pytest

from tessera.config import ConfigError, load, render


def write(tmp_path, text: str):
    path = tmp_path / "tessera.toml"
    path.write_text(text)
    return path


def test_http_store_and_options(tmp_path):
    cfg = load(write(tmp_path, """
[api]
show_image_direct_url = true
show_multiple_locations = true

[[stores]]
id = "web"
type = "http"

[[stores]]
id = "disk"
"""))
    stores = cfg.engine.stores
    assert [(s.id, s.type) for s in stores] == [("disk", "local"), ("web", "http")]
    assert cfg.server.show_image_direct_url and cfg.server.show_multiple_locations
    again = load(write(tmp_path, render(cfg)))
    assert again.engine.stores == stores


@pytest.mark.parametrize("extra", ['default = true', 'path = "/srv/web"', 'max_bytes = 10'])
def test_http_store_refusals(tmp_path, extra):
    with pytest.raises(ConfigError, match="read-only"):
        load(write(tmp_path, f"""
[[stores]]
id = "disk"

[[stores]]
id = "web"
type = "http"
{extra}
"""))


def test_only_http_stores_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="type local"):
        load(write(tmp_path, '[[stores]]\nid = "web"\ntype = "http"\n'))

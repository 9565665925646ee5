# Index.read: a counted reader under the resize gate -- a map resize waits for open readers,
# readers opened during a resize wait for it, and a failing read still leaves the count.
from __future__ import annotations

import threading

import pytest

from tessera.engine.index import Index


@pytest.fixture
def index(tmp_path):
    idx = Index.open(tmp_path / "index", map_size=1 << 20, durable=False)
    yield idx
    idx.close()


def test_a_resize_waits_for_the_open_reader(index):
    size = index.env.info()["map_size"]
    grown = threading.Event()
    with index.read() as txn:
        grower = threading.Thread(target=lambda: (index._grow(), grown.set()))
        grower.start()
        assert not grown.wait(0.2)                 # the reader is still open
        assert txn.get(b"nothing", db=index.db("meta")) is None
    assert grown.wait(10)
    grower.join()
    assert index.env.info()["map_size"] == 2 * size
    assert index._readers == 0


def test_a_reader_waits_for_a_resize_in_progress(index):
    entered = threading.Event()
    with index._gate:
        index._resizing = True

    def reader():
        with index.read():
            entered.set()

    t = threading.Thread(target=reader)
    t.start()
    assert not entered.wait(0.2)
    with index._gate:
        index._resizing = False
        index._gate.notify_all()
    assert entered.wait(10)
    t.join()
    assert index._readers == 0


def test_an_error_inside_a_read_leaves_the_count(index):
    with pytest.raises(KeyError):
        with index.read():
            raise KeyError("x")
    assert index._readers == 0
    index._grow()                                  # nothing left to wait for

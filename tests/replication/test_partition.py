# A partition, in one process with three real engines and real peer sockets on 127.0.0.1:
# node c is cut off its peers (peer listener stopped, outgoing calls failing); both sides
# accept metadata changes; after healing, every node shows the same records and the later
# write wins (hybrid logical clock stamps, last writer wins per image).
import trio

from tessera.engine.patch import PatchOp


async def _wait(predicate, what, timeout=20.0):
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out waiting for {what}")


def _name(engine, image_id):
    try:
        return engine.get_image(image_id).name
    except Exception:
        return None


async def test_partition_both_sides_write_later_write_wins(engine_cluster):
    engines, nodes = await engine_cluster(("a", "b", "c"), anti_entropy_interval=0.2)
    a, c = engines["a"], engines["c"]
    rec = await a.create_image({"name": "first", "disk_format": "raw",
                                "container_format": "bare"}, owner="p")
    await _wait(lambda: all(_name(e, rec.id) == "first" for e in engines.values()), "create")

    await nodes["c"].partition()
    await a.update_image(rec.id, [PatchOp("replace", "/name", "from-a")], is_admin=True)
    await trio.sleep(0.05)                                     # c's write comes later
    await c.update_image(rec.id, [PatchOp("replace", "/name", "from-c")], is_admin=True)
    other = await c.create_image({"name": "made-on-c", "disk_format": "raw",
                                  "container_format": "bare"}, owner="p")
    await trio.sleep(0.6)                                      # several anti-entropy rounds
    assert _name(engines["b"], rec.id) == "from-a"             # the majority side moved on
    assert _name(c, rec.id) == "from-c"                        # so did the cut-off node
    assert _name(a, other.id) is None

    await nodes["c"].heal()
    await _wait(lambda: all(_name(e, rec.id) == "from-c" for e in engines.values()),
                "the later write everywhere")
    await _wait(lambda: all(_name(e, other.id) == "made-on-c" for e in engines.values()),
                "the record created during the partition")
    stamps = {i: e.replica.stamp_of(rec.id) for i, e in engines.items()}
    assert len(set(stamps.values())) == 1

# Placement: rendezvous hashing gives R distinct owners; adding or removing a node moves only
# the chunks whose owner set it enters or leaves.
import hashlib

from tessera.replication.placement import Placement

IDS = [hashlib.blake2b(str(i).encode(), digest_size=32).digest() for i in range(4000)]


def test_owners_are_distinct_deterministic_and_balanced():
    p = Placement(["a", "b", "c", "d", "e"], 3)
    counts = {n: 0 for n in p.nodes}
    for cid in IDS:
        owners = p.owners(cid)
        assert len(set(owners)) == 3
        assert owners == Placement(["e", "d", "c", "b", "a"], 3).owners(cid)
        for n in owners:
            counts[n] += 1
    expected = len(IDS) * 3 / 5
    assert all(abs(c - expected) < expected * 0.1 for c in counts.values())


def test_adding_a_node_moves_only_chunks_it_takes():
    before = Placement(["a", "b", "c", "d"], 3)
    after = Placement(["a", "b", "c", "d", "e"], 3)
    moved = 0
    for cid in IDS:
        old, new = set(before.owners(cid)), set(after.owners(cid))
        if old != new:
            moved += 1
            assert "e" in new and len(old - new) == 1       # e replaced exactly one owner
    # e takes its fair share (3/5 of chunks have it as an owner), nothing else moves
    assert abs(moved - len(IDS) * 3 / 5) < len(IDS) * 0.06


def test_removing_a_node_moves_only_its_chunks():
    before = Placement(["a", "b", "c", "d", "e"], 3)
    after = Placement(["a", "b", "c", "d"], 3)
    for cid in IDS:
        old, new = set(before.owners(cid)), set(after.owners(cid))
        if "e" in old:
            assert old - {"e"} <= new and len(new - old) == 1
        else:
            assert old == new


def test_fewer_nodes_than_replicas():
    p = Placement(["a", "b"], 3)
    assert sorted(p.owners(IDS[0])) == ["a", "b"]
    assert p.owns("a", IDS[0])

# The hybrid logical clock: monotonic, ahead of anything merged, and never equal across nodes.
from tessera.replication.hlc import HybridClock, stamp_time


def test_stamps_increase_even_when_the_wall_clock_stalls_or_goes_back():
    t = [1000.0]
    clock = HybridClock(3, wall=lambda: t[0])
    a = clock.now()
    b = clock.now()
    t[0] = 999.0
    c = clock.now()
    assert a < b < c
    assert stamp_time(a) == 1000.0 and a & 0xFF == 3


def test_merge_moves_past_a_remote_stamp_from_the_future():
    ahead = HybridClock(1, wall=lambda: 5000.0).now()
    clock = HybridClock(2, wall=lambda: 1000.0)
    merged = clock.merge(ahead)
    assert merged > ahead and clock.now() > merged


def test_two_nodes_in_the_same_millisecond_never_tie():
    x = HybridClock(0, wall=lambda: 1000.0).now()
    y = HybridClock(1, wall=lambda: 1000.0).now()
    assert x != y and x >> 8 == y >> 8

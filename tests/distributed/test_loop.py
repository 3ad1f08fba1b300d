"""rank_batches: every rank gets exactly `steps` batches of one shared stream of epochs."""

import pytest

from recsys.distributed.loop import rank_batches


def test_equal_counts_past_one_epoch_and_disjoint_within_a_pass():
    def stream_of_epochs():  # each rank has its own copy of the same stream (same seed)
        passes = iter(range(100))
        return lambda: [(p, b) for p in [next(passes)] for b in range(5)]  # 5 batches tagged (pass, batch)

    got = [list(rank_batches(stream_of_epochs(), r, 3, steps=4)) for r in range(3)]
    assert [len(g) for g in got] == [4, 4, 4]  # 12 > 5 batches per epoch
    stream = [(p, b) for p in range(3) for b in range(5)]
    assert got[1] == [stream[i] for i in (1, 4, 7, 10)]
    assert not set(got[0]) & set(got[1])


def test_zero_steps_and_bad_inputs():
    assert list(rank_batches(lambda: [1, 2], 0, 2, 0)) == []
    with pytest.raises(ValueError, match="no batches"):
        list(rank_batches(lambda: [], 0, 1, 3))
    with pytest.raises(ValueError, match="outside a world"):
        list(rank_batches(lambda: [1], 2, 2, 1))

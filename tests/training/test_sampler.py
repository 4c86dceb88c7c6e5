"""Which samples each rank trains on: seeded, different every epoch, every sample once, equal
step counts on every rank."""

import pytest

from training.sampler import EpochBatches


def test_shuffle_is_seeded_and_differs_per_epoch():
    s = EpochBatches(10, 3, seed=1)
    assert s.batches(0) == EpochBatches(10, 3, seed=1).batches(0)
    assert s.batches(0) != s.batches(1)
    assert sorted(i for b in s.batches(2) for i in b.indices) == list(range(10))


@pytest.mark.parametrize("n,batch,world",
                         [(10, 3, 2), (11, 2, 2), (11, 4, 2), (7, 1, 3), (5, 4, 4)])
def test_ranks_get_equal_step_counts_and_every_sample_once(n, batch, world):
    ranks = [EpochBatches(n, batch, seed=1, rank=r, world=world) for r in range(world)]
    per_rank = [s.batches(3) for s in ranks]
    # Same number of micro-steps everywhere (a rank with an extra one would wait forever).
    assert {len(b) for b in per_rank} == {len(ranks[0])}
    real = [i for b in per_rank for mb in b if mb.real for i in mb.indices]
    assert sorted(real) == list(range(n))  # every sample exactly once
    # Step k of all ranks together is global batch k of a single process with batch x world.
    single = EpochBatches(n, batch * world, seed=1).batches(3)
    for k, mb in enumerate(single):
        together = [i for b in per_rank for i in b[k].indices if b[k].real]
        assert sorted(together) == sorted(mb.indices)
    fillers = [mb for b in per_rank for mb in b if not mb.real]
    assert all(len(mb.indices) == 1 for mb in fillers)

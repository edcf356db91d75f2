"""The session's record of fresh random seeds (tests/conftest.py), which a failing test reports."""

import numpy as np

import conftest


def test_an_unseeded_generator_is_recorded_and_its_seed_reproduces_it():
    before = len(conftest.FRESH_SEEDS)
    draws = np.random.default_rng().random(4)
    assert len(conftest.FRESH_SEEDS) == before + 1
    assert np.array_equal(np.random.Generator(np.random.PCG64(conftest.FRESH_SEEDS[-1])).random(4), draws)
    assert np.random.default_rng(5).random() == np.random.Generator(np.random.PCG64(5)).random()  # seeded: as given
    assert len(conftest.FRESH_SEEDS) == before + 1


def test_seeds_given_are_replayed_in_order(monkeypatch):
    monkeypatch.setattr(conftest, "_replay", [11, 12])
    first, second, fresh = (np.random.default_rng().random() for _ in range(3))
    assert [first, second] == [np.random.Generator(np.random.PCG64(s)).random() for s in (11, 12)]
    assert conftest.FRESH_SEEDS[-3:-1] == [11, 12] and fresh != first

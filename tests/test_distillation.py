"""Distillation from a digital teacher helps a small MTJ student on digits, over many networks."""

import numpy as np
import pytest

from spingpu import ConfigError, Distillation, Readout, Schedule, TrainConfig, Variability, load_dataset, train
from spingpu.training import teacher_logits


def test_distillation_improves_small_students_on_digits():
    """One split and teacher (fresh ones move the gain too much for a test: 2.8-11 standard errors
    over 192 students at 14 draws, a review's count), fresh students: over 96 of them, ten draws
    gave 4.1-7.5 standard errors (mean 5.5, sd 1.1; 2026-12-02); over the 128 here, a bar of 2
    fails about once in 2000 runs."""
    ds = load_dataset("digits", seed=0, max_train=300)
    logits, teacher_acc = teacher_logits(ds, TrainConfig(hidden=(128,), grad_mode="tanh", epochs=60, lr=3e-3,
                                                         batch_size=64, seed=1))
    assert logits.shape == (300, 10) and teacher_acc > 0.9
    base = dict(hidden=(8,), grad_mode="fd_forward", epochs=30, lr=0.01, batch_size=64,
                seed=int(np.random.default_rng().integers(0, 2**31)),
                lr_schedule=Schedule("exp", gamma=0.97), variability=Variability(sigma_d2d=0.1, sigma_pair=0.02),
                readout=Readout(read_noise=1e-3))
    plain = train(ds, TrainConfig(**base), n_networks=128, backend="cpu")
    distilled = train(ds, TrainConfig(**base, distillation=Distillation(temperature=2.0, alpha=0.5)), n_networks=128,
                      backend="cpu", teacher_logits=logits)
    # Paired: network k has the same junctions and initial weights in both runs.
    diff = distilled.test_acc.values - plain.test_acc.values
    mean, se = diff.mean(), diff.std(ddof=1) / np.sqrt(diff.size)
    assert mean - 2 * se > 0, (mean, se)  # one-sided ~98 % confidence that distillation helps
    assert np.median(distilled.train_loss.values[:, -1]) != np.median(plain.train_loss.values[:, -1])


def test_teacher_must_be_digital_and_students_need_its_logits():
    ds = load_dataset("iris")
    with pytest.raises(ConfigError, match="teacher grad_mode"):
        teacher_logits(ds, TrainConfig(grad_mode="fd_forward"))
    with pytest.raises(ConfigError, match="distillation"):
        train(ds, TrainConfig(epochs=1, distillation=Distillation()), n_networks=1)


def test_teacher_does_not_depend_on_the_callers_blas_threads():
    """MNIST-shaped products (784 inputs, 512 units) round differently with 1 and 2 OpenBLAS threads;
    the teacher trains with one whatever the caller's setting (a Dask worker has 1, a shell more)."""
    from threadpoolctl import threadpool_limits

    from spingpu import from_arrays

    rng = np.random.default_rng()
    data = from_arrays(rng.random((600, 784)), np.arange(600) % 10, seed=1)
    cfg = TrainConfig(hidden=(512,), grad_mode="tanh", epochs=1, lr=1e-3, optimizer="adam", batch_size=128)
    runs = []
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            runs.append(teacher_logits(data, cfg))
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]

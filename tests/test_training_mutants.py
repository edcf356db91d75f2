"""Tests from a mutation round of the training side (config, NumPy engine, trainer, fused and
batched CPU kernels): behaviour that the engines share, so that comparing them with each other
does not pin it, checked against the independent reference trainer (tests/reference_trainer.py,
through tests/test_reference_trainer.py's ``reference_run``) or against the documented count.
"""

import numpy as np
import pytest

import spingpu
from spingpu.training.numpy_engine import NumpyEngine

import test_reference_trainer as reference  # a module attribute: its test is not collected twice here

METRICS = reference.METRICS


def assert_equals_reference(data, config, backends=("numpy", "cpu")):
    expected = reference.reference_run(data, config, None)
    for backend in backends:
        got = spingpu.train(data, config, networks=reference.NETWORKS, backend=backend, progress=False)
        assert not got.diverged.values.any()
        for name in METRICS:
            np.testing.assert_allclose(got[name].values, expected[name], rtol=1e-9, atol=0,
                                       err_msg=f"{backend}: {name}")


def noisy_config(rng, **keywords):
    return spingpu.TrainConfig(**{**dict(hidden=(6,), epochs=3, lr=0.05, seed=int(rng.integers(2**63)),
                                         dtype="float64", grad_mode="fd_forward",
                                         readout=spingpu.Readout(read_noise=2e-3)), **keywords})


@pytest.mark.parametrize("extra", [0, 9], ids=["n_train", "beyond n_train"])
def test_a_batch_of_all_the_training_rows_or_more_is_the_full_batch(extra):
    """batch_size = n_train, or more, trains as the full batch (batch_size None): the samples in
    their own order, each with the read noise of its own row, in every engine. (Shuffled, the
    sample at position b would take row b's noise: the fused engine's order must then be the
    identity exactly when the trainer's is.)"""
    rng = np.random.default_rng()
    data = reference.fresh_data(rng)
    assert_equals_reference(data, noisy_config(rng, batch_size=data.y_train.size + extra))


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_every_optimiser_adds_the_weight_decay_term_to_the_gradient(optimizer):
    """weight_decay is an L2 term added to the gradient before the optimiser, for weights and
    biases alike (TrainConfig), with every optimiser: plain SGD too (the reference trainer's cases
    had it only with momentum and Adam)."""
    rng = np.random.default_rng()
    data = reference.fresh_data(rng)
    config = noisy_config(rng, optimizer=optimizer, lr=0.2 if optimizer == "sgd" else 0.05,
                          weight_decay=float(rng.uniform(0.02, 0.1)), batch_size=20)
    assert_equals_reference(data, config)


def test_evaluation_in_passes_of_a_few_rows_reads_each_samples_own_noise(monkeypatch):
    """Validation after epoch e reads the evaluation noise stream's slots 0, 1 at rows
    e x n_val + b, the test after training slots 2, 3 at rows epochs x n_test + b, in passes of
    ``eval_rows`` samples (the NumPy and batched engines) whatever the passes' size, or sample by
    sample (the fused engine). With read noise as large as the signal the accuracies are a
    fingerprint of the noise each sample got (at the tests' usual 2 mV they hardly depend on it):
    passes of 7 rows and the fused engine must give the reference's one-pass numbers."""
    rng = np.random.default_rng()
    centres = rng.normal(0, 1.5, (3, 5))
    y = rng.integers(0, 3, 300)
    data = spingpu.from_arrays(centres[y] + rng.normal(0, 1.0, (300, 5)), y, seed=int(rng.integers(2**31)))
    monkeypatch.setattr(NumpyEngine, "eval_rows", 7)
    config = noisy_config(rng, epochs=2, readout=spingpu.Readout(read_noise=0.2))
    assert data.y_val.size > 7 and data.y_val.size % 7
    assert_equals_reference(data, config)


@pytest.mark.filterwarnings("ignore::spingpu.ExtrapolationWarning")
@pytest.mark.parametrize("grad_mode", ["fd_forward", "oracle"])
def test_extrapolated_readings_count_validation_every_epoch_and_test_once(grad_mode):
    """``extrapolated_readings`` is the readings beyond the table over those taken: hidden units x
    (epochs x n_train x the pair's training readings + (epochs x n_val + n_test) evaluation
    readings). Every reading is beyond a table far from every current, so the fraction is exactly
    1, with validation and test splits of different sizes (which tell n_val from n_test)."""
    import test_tabulated

    rng = np.random.default_rng()
    sizes = (30, 7, 19)  # train, val, test
    parts = []
    for n in sizes:
        y = np.concatenate([[0, 1], rng.integers(0, 2, n - 2)])
        parts += [rng.normal(0, 1.0, (n, 3)) + y[:, None], y]
    data = spingpu.from_splits(*parts)
    i = np.linspace(0.5, 1.0, 12)
    model = spingpu.get_model("tabulated", iv_table=(i, test_tabulated.curve(i)))
    config = spingpu.TrainConfig(hidden=(3, 2), epochs=2, lr=0.05, seed=int(rng.integers(2**63)), dtype="float64",
                                 batch_size=8, grad_mode=grad_mode)
    for backend in ("numpy", "cpu"):
        got = spingpu.train(data, config, networks=[1, 4], model=model, backend=backend, progress=False)
        np.testing.assert_array_equal(got.extrapolated_readings.values, 1.0, err_msg=backend)


def test_defaults_are_the_documented_ones():
    """The defaults a user gets without saying: README "Training networks of junction pairs"
    (i_bias 0 A, i_gain 200 uA per unit, v_scale 5 /V, dI 20 uA, direct readout), the CLI's
    (--optimizer adam, --lr 0.01, --dtype float32 as the README's engine paragraph says), Adam's
    published ones (Kingma & Ba 2015: betas 0.9 and 0.999, eps 1e-8), and the distillation of the
    README's studies (T = 4, alpha = 0.7), which ``Distillation()`` stands for."""
    from spingpu.training.config import Distillation, Schedule

    c = spingpu.TrainConfig()
    assert (c.grad_mode, c.optimizer, c.lr, c.dtype, c.batch_size) == ("fd_forward", "adam", 0.01, "float32", None)
    assert (c.adam_betas, c.adam_eps, c.momentum, c.weight_decay, c.init_gain) == ((0.9, 0.999), 1e-8, 0.9, 0.0, 1.0)
    assert c.lr_schedule == Schedule("constant") and c.distillation is None
    n = c.neuron
    assert (n.i_bias, n.i_gain, n.v_scale, n.delta_i, n.readout) == (0.0, 200e-6, 5.0, 20e-6, "direct")
    d = Distillation()
    assert (d.temperature, d.alpha) == (4.0, 0.7)


def test_the_divergence_test_flags_nan_and_values_beyond_float32s_range_from_the_loss_or_any_gradient():
    """README: a network whose loss or a weight gradient turns NaN or exceeds 3.4e38 (float32's
    largest number) is flagged. At the boundary itself: float32's largest number is kept, the next
    float64 above it is flagged; so is a loss beyond it with finite gradients, and a single
    gradient element; a network flagged before stays flagged. The NumPy engine's test and the
    compiled engines' (``out_of_range``) alike, against float32's range written here."""
    from spingpu.kernels.network import out_of_range

    rng = np.random.default_rng()
    top = float(np.finfo(np.float32).max)
    above = np.nextafter(top, np.inf)
    values = [0.0, top, -top, above, -above, np.nan, np.inf, 1e300, rng.normal()]
    beyond = [not abs(v) <= top for v in values]
    np.testing.assert_array_equal([out_of_range(v) for v in values], beyond)
    # network k: loss values[k] and finite gradients; then networks with a finite loss and values[k]
    # in one random element of one gradient array; the last one already flagged
    k = len(values)
    n = 2 * k + 1
    loss = np.concatenate([values, rng.normal(size=k + 1)])
    grads = [rng.normal(size=(n, 3, 4)), rng.normal(size=(n, 4)), rng.normal(size=(n, 4, 2))]
    for j, v in enumerate(values):
        g = grads[rng.integers(len(grads))]
        g[k + j].flat[rng.integers(g[k + j].size)] = v
    engine = NumpyEngine.__new__(NumpyEngine)  # the divergence test needs only the networks and their flags
    engine.networks = np.arange(n)
    engine.alive = np.ones(n, dtype=bool)
    engine.alive[-1] = False
    engine.flag_diverged(loss, grads)
    np.testing.assert_array_equal(engine.alive, np.logical_not(beyond + beyond + [True]))

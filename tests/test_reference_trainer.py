"""spingpu's training against an independent second implementation (tests/reference_trainer.py:
plain NumPy in float64, written from the documentation), on fresh random data, setting by setting:
gradient modes, variability, read noise (Gaussian, Johnson-shot), ADC and DAC, the bridge readout,
two hidden layers, optimisers with weight decay, schedules, mini-batches with a partial last one,
distillation and digital baselines. Every per-epoch metric and the test accuracy must agree to
1e-9 relative with the numpy backend (float64) and the cpu backend (the fused engine).
"""

import numpy as np
import pytest

import spingpu
from spingpu.kernels import streams
from spingpu.training.config import Distillation
from spingpu.training.numpy_engine import initial_weights

import reference_trainer as ref

METRICS = ("train_loss", "train_acc", "val_acc", "test_acc", "grad_cosine", "deriv_rel_err")
NETWORKS = np.array([0, 5, 9])
VAR = spingpu.Variability(sigma_chip=0.05, sigma_d2d=0.2, sigma_pair=0.03)
BRIDGE = spingpu.PairNeuron(readout="bridge", r_ref=1400.0, i_bias=2e-5)
JOHNSON = spingpu.Readout(noise_model="johnson_shot", temperature=300.0, bandwidth=1e9)

CASES = {  # name: (TrainConfig keywords beyond BASE, with a teacher)
    "fd_forward, variability, 2 mV noise": (dict(grad_mode="fd_forward", variability=VAR,
                                                 readout=spingpu.Readout(read_noise=2e-3)), False),
    "fd_single, Johnson-shot noise, bridge": (dict(grad_mode="fd_single", neuron=BRIDGE, readout=JOHNSON), False),
    "fd_symmetric, 2 hidden layers, noise and 8-bit ADC": (
        dict(grad_mode="fd_symmetric", hidden=(5, 4), variability=VAR,
             readout=spingpu.Readout(read_noise=2e-3, adc_bits=8)), False),
    "model, 5-bit DAC and 6-bit ADC, bridge": (
        dict(grad_mode="model", neuron=BRIDGE, variability=VAR,
             readout=spingpu.Readout(dac_bits=5, dac_range=(-5e-4, 5e-4), adc_bits=6)), False),
    "oracle, sgd, step schedule": (dict(grad_mode="oracle", optimizer="sgd", lr=0.2, lr_schedule="step:2:0.5"),
                                   False),
    "fd_forward, momentum, weight decay, mini-batches of 20": (
        dict(grad_mode="fd_forward", optimizer="momentum", momentum=0.8, weight_decay=0.05, batch_size=20,
             readout=spingpu.Readout(read_noise=1e-3)), False),
    "fd_forward, adam betas and eps, cosine schedule, weight decay": (
        dict(grad_mode="fd_forward", adam_betas=(0.8, 0.99), adam_eps=1e-6, weight_decay=0.01,
             lr_schedule="cosine", variability=VAR), False),
    "fd_forward, distilled (T 4, alpha 0.7), mini-batches of 16, exp schedule": (
        dict(grad_mode="fd_forward", batch_size=16, lr_schedule="exp:0.7", distillation=Distillation(4.0, 0.7),
             readout=spingpu.Readout(read_noise=2e-3)), True),
    "tanh baseline, 2 hidden layers": (dict(grad_mode="tanh", hidden=(5, 4)), False),
    "relu baseline, sgd": (dict(grad_mode="relu", optimizer="sgd", lr=0.1), False),
}


def fresh_data(rng):
    """80 samples of 5 features in 3 Gaussian classes at random centres."""
    centres = rng.normal(0, 1.5, (3, 5))
    y = rng.integers(0, 3, 80)
    return spingpu.from_arrays(centres[y] + rng.normal(0, 1.0, (80, 5)), y, seed=int(rng.integers(2**31)))


def reference_settings(config):
    n, r = config.neuron, config.readout
    settings = dict(mode=config.grad_mode, v_scale=n.v_scale, i_gain=n.i_gain, i_bias=n.i_bias, r_ref=n.r_ref,
                    readout=n.readout, delta_i=n.delta_i, dac_range=tuple(r.dac_range), dac_bits=r.dac_bits,
                    adc_range=tuple(r.adc_range), adc_bits=r.adc_bits, opt=config.optimizer, lr=config.lr,
                    mu=config.momentum, betas=config.adam_betas, eps=config.adam_eps, wd=config.weight_decay,
                    sched=config.lr_schedule.kind, every=config.lr_schedule.every, gamma=config.lr_schedule.gamma,
                    batch=config.batch_size, noise_model=r.noise_model, read_noise=r.read_noise,
                    temperature=r.temperature, bandwidth=r.bandwidth)
    if config.distillation is not None:
        settings["distill"] = (config.distillation.temperature, config.distillation.alpha)
    return settings


def reference_run(data, config, teacher):
    model = spingpu.get_model("stt_compact")
    sizes = (data.n_features, *config.hidden, data.n_classes)
    junctions = [spingpu.sample_layer(model, config.variability, config.seed, NETWORKS, layer, width)
                 for layer, width in enumerate(config.hidden)]
    nominal = np.array([p.nominal for p in model.parameters])
    trainer = ref.Ref(reference_settings(config), initial_weights(config, NETWORKS, sizes), junctions, nominal)
    r = config.readout
    noisy = config.is_mtj and not (r.noise_model == "gaussian" and r.read_noise == 0)

    def noise(kind, slot_base, row0):
        if not noisy:
            return None
        purpose = streams.PURPOSE_NOISE if kind == "train" else streams.PURPOSE_EVAL_NOISE
        return lambda layer, reading, shape: streams.normals(config.seed, NETWORKS, purpose, layer,
                                                             slot_base + reading, row0, shape[1], shape[2])

    return ref.train(trainer, data, reference_settings(config), config.epochs,
                     lambda epoch, n: streams.epoch_order(config.seed, epoch, n), teacher, noise)


@pytest.mark.parametrize("case", list(CASES))
def test_training_equals_an_independent_implementation(case):
    rng = np.random.default_rng()
    data = fresh_data(rng)
    keywords, distilled = CASES[case]
    config = spingpu.TrainConfig(**{**dict(hidden=(6,), epochs=5, lr=0.05, seed=int(rng.integers(2**63)),
                                           dtype="float64"), **keywords})
    teacher = rng.normal(0, 2, (data.y_train.size, data.n_classes)) if distilled else None
    expected = reference_run(data, config, teacher)
    for backend in ("numpy", "cpu"):
        got = spingpu.train(data, config, networks=NETWORKS, backend=backend, teacher_logits=teacher, progress=False)
        assert not got.diverged.values.any()
        for name in METRICS:
            np.testing.assert_allclose(got[name].values, expected[name], rtol=1e-9, atol=0,
                                       err_msg=f"{backend}: {name}")

"""Bad input to the Python API: one-line ConfigErrors naming the field, raised before anything runs.

Nearly every check here is at the configuration level (nothing is trained); the few runs are
iris, 2 networks, 1 epoch.
"""

import dataclasses
import math
import warnings

import numpy as np
import pytest

import spingpu

from spingpu import Backend, ConfigError, Readout, TrainConfig, Variability, get_model, load_dataset, train
from spingpu.errors import check_range
from spingpu.training import Distillation, PairNeuron, Schedule
from spingpu.training import trainer


@pytest.fixture(scope="module")
def iris():
    return load_dataset("iris")  # 90 training rows, 4 features, 3 classes


CONFIG = TrainConfig(hidden=(2,), epochs=1)


def raises(field, *words):
    """Context manager: a ConfigError on ``field`` whose one-line message holds every word."""
    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(ConfigError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            err = self.info.value
            assert err.field == field, str(err)
            assert "\n" not in str(err) and str(err).startswith(f"{field}: ")
            for word in words:
                assert word in str(err), str(err)
            return handled
    return _Check()


# --- check_range ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, words", [
    ("0.1", "expected a number, got '0.1'"),
    (b"0.1", "expected a number, got b'0.1'"),
    (True, "expected a number, got True"),
    (np.bool_(False), "expected a number, got"),
    (None, "expected a number, got None"),
    ([0.1], "expected a number, got [0.1]"),
    (math.nan, "expected a number, got NaN; allowed: any finite number"),
    (math.inf, "expected a finite number, got inf"),
    (-math.inf, "expected a finite number, got -inf"),
])
def test_check_range_accepts_only_finite_real_numbers(value, words):
    with raises("x", words):
        check_range("x", value)


def test_check_range_integers():
    assert check_range("n", 2.0, integer=True) == 2 and type(check_range("n", 2.0, integer=True)) is int
    assert check_range("n", np.int64(7), integer=True) == 7
    assert check_range("n", 2**64 - 1, 0, 2**64 - 1, integer=True) == 2**64 - 1  # exact, not through float
    for bad in (2.5, np.float32(2.5), "4", True, None):
        with raises("n", "expected an integer, got"):
            check_range("n", bad, integer=True)
    with raises("n", "expected a finite integer, got inf"):
        check_range("n", math.inf, integer=True)
    with raises("n", "1e+30 is out of range", "allowed: 1 <= value <= 1000"):
        check_range("n", 1e30, 1, 1000, integer=True)


def test_check_range_allow_inf():
    assert check_range("v", math.inf, 0.0, 1.0, allow_inf=True) == math.inf
    with raises("v", "expected a finite number, got -inf", "allowed: 0 <= value <= 1 or inf"):
        check_range("v", -math.inf, 0.0, 1.0, allow_inf=True)


# --- the configuration dataclasses ---------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field, words", [
    (dict(epochs=2.5), "epochs", ["expected an integer, got 2.5"]),
    (dict(lr="0.1"), "lr", ["expected a number, got '0.1'"]),
    (dict(batch_size="4"), "batch_size", ["expected an integer, got '4'"]),
    (dict(adam_betas=(0.9,)), "adam_betas", ["expected two numbers (beta1, beta2)"]),
    (dict(adam_betas=0.9), "adam_betas", ["expected two numbers"]),
    (dict(adam_betas=np.array(0.9)), "adam_betas", ["expected two numbers"]),
    (dict(adam_betas={0.9: 0.99, 0.5: 0.1}), "adam_betas", ["expected two numbers"]),
    (dict(hidden={8: 1}), "hidden", ["expected hidden layer widths"]),
    (dict(hidden=[[8]]), "hidden", ["expected an integer, got [8]"]),
    (dict(adam_betas=(0.9, 1.0)), "adam_betas[1]", ["allowed: 0 <= value < 1"]),
    (dict(neuron=None), "neuron", ["expected a spingpu.PairNeuron, got NoneType None"]),
    (dict(variability=None), "variability", ["expected a spingpu.Variability"]),
    (dict(readout="x"), "readout", ["expected a spingpu.Readout, got str 'x'"]),
    (dict(distillation=0.5), "distillation", ["expected a Distillation or None"]),
    (dict(lr_schedule=None), "lr_schedule", ["expected a Schedule or text"]),
    (dict(lr_schedule="linear"), "lr_schedule", ["'linear'", "allowed: constant, step:EVERY:GAMMA"]),
    (dict(lr_schedule="step:0:0.5"), "lr_schedule every", ["0 is out of range", "allowed: 1 <= value"]),
    (dict(hidden="8"), "hidden", ["expected hidden layer widths"]),
    (dict(hidden=()), "hidden", ["0 hidden layers; allowed: 1 to 16"]),
    (dict(hidden=(8, 2.5)), "hidden", ["expected an integer, got 2.5"]),
    (dict(grad_mode=None), "grad_mode", ["None", "allowed: fd_forward"]),
    (dict(optimizer=["adam"]), "optimizer", ["['adam']", "allowed: sgd, momentum, adam"]),
    (dict(seed=-1), "seed", ["-1 is out of range"]),
    (dict(momentum=math.nan), "momentum", ["NaN"]),
    (dict(weight_decay=math.inf), "weight_decay", ["expected a finite number, got inf"]),
    (dict(dtype=np.int32), "dtype", ["'int32'", "allowed: float32, float64"]),
    (dict(dtype=3), "dtype", ["3", "allowed: float32, float64"]),
])
def test_bad_train_config(kwargs, field, words):
    with raises(field, *words):
        TrainConfig(**kwargs)


def test_train_config_stores_converted_values():
    assert TrainConfig(hidden=np.array(5)).hidden == (5,) and TrainConfig(hidden=np.array([5, 3])).hidden == (5, 3)
    cfg = TrainConfig(hidden=8, epochs=2.0, batch_size=np.int64(4), lr=np.float32(0.5), adam_betas=[0.5, 0.75],
                      lr_schedule="step:2:0.5", seed=3.0)
    assert cfg.hidden == (8,) and type(cfg.epochs) is int and cfg.epochs == 2
    assert type(cfg.batch_size) is int and type(cfg.lr) is float and type(cfg.seed) is int
    assert cfg.adam_betas == (0.5, 0.75) and cfg.lr_schedule == Schedule("step", every=2, gamma=0.5)
    assert cfg.as_dict()["lr_schedule"] == "step:2:0.5"
    for text in ("exp:0.9999995", "step:3:0.123456789", "cosine", "constant"):  # every digit kept
        assert str(Schedule.parse(text)) == text and Schedule.parse(str(Schedule.parse(text))) == Schedule.parse(text)
    assert TrainConfig(lr_schedule="cosine").lr_schedule == Schedule("cosine")
    assert [TrainConfig(dtype=d).dtype for d in (np.float64, np.float32, np.dtype("float64"), "float32")] == [
        "float64", "float32", "float64", "float32"]  # numpy's types and dtypes by their names
    assert TrainConfig(hidden=np.int64(5)).hidden == (5,) and TrainConfig(hidden=np.array([3, 2])).hidden == (3, 2)
    assert TrainConfig(hidden=8.0).hidden == (8,) == TrainConfig(hidden=np.float32(8)).hidden  # whole, as epochs=2.0
    with raises("hidden", "expected an integer, got True"):
        TrainConfig(hidden=True)


@pytest.mark.parametrize("make, field, words", [
    (lambda: PairNeuron(i_gain="1e-4"), "i_gain", ["expected a number, got '1e-4'"]),
    (lambda: PairNeuron(readout=None), "readout", ["None", "allowed: direct, bridge"]),
    (lambda: PairNeuron(delta_i=math.inf), "delta_i", ["finite"]),
    (lambda: Schedule("step", every=1.5), "lr_schedule every", ["expected an integer, got 1.5"]),
    (lambda: Schedule("exp", gamma="0.5"), "lr_schedule gamma", ["expected a number"]),
    (lambda: Distillation(temperature=None), "distillation.temperature", ["expected a number, got None"]),
    (lambda: Distillation(alpha=1.5), "distillation.alpha", ["allowed: 0 <= value <= 1"]),
    (lambda: Readout(adc_bits=4.5), "adc_bits", ["expected an integer, got 4.5"]),
    (lambda: Readout(adc_range="01"), "adc_range", ["expected two numbers (low, high), got '01'"]),
    (lambda: Readout(adc_range=(-math.inf, 1.0)), "adc_range", ["expected finite numbers, got -inf; allowed: -1000 <= low"]),
    (lambda: Readout(dac_range=(1.0,)), "dac_range", ["expected two numbers"]),
    (lambda: Readout(noise_model=1), "noise_model", ["1", "allowed: gaussian, johnson_shot"]),
    (lambda: Backend("cpu", gpu_memory_bytes=math.inf), "gpu_memory_bytes", ["expected a finite integer, got inf"]),
    (lambda: Backend("cpu", gpu_memory_bytes="1e9"), "gpu_memory_bytes", ["expected an integer"]),
    (lambda: Backend("cpu", block_threads=True), "block_threads", ["True", "allowed: a multiple of 32 from 32 to 256"]),
    (lambda: Backend("cpu", min_blocks_per_sm=2.5), "min_blocks_per_sm", ["expected an integer"]),
    (lambda: Backend(None), "backend", ["None", "allowed: auto, numpy, cpu, cuda"]),
    (lambda: Backend("auto"), "backend", ["'auto' is a choice made by name", "allowed for a Backend: numpy, cpu, cuda"]),
    (lambda: Schedule("constant", gamma=0.5), "lr_schedule gamma",
     ["0.5 has no effect on the constant schedule (only step and exp take gamma); leave it at 1.0"]),
    (lambda: Schedule("exp", every=3), "lr_schedule every", ["3 has no effect on the exp schedule (only step takes every)"]),
    (lambda: TrainConfig(dtype=None), "dtype", ["None; allowed: float32, float64"]),
    (lambda: spingpu.Parameter("x", 1.0, 3, "d", low=0.0, low_open=True), "x.unit", ["expected a string, got 3"]),
    (lambda: spingpu.Parameter("x", 1.0, "ohm", None, low=0.0, low_open=True), "x.description", ["expected a string"]),
    (lambda: spingpu.Parameter("x", 1.0, "ohm", "", low=0.0, low_open="yes"), "x.low_open", ["expected True or False"]),
    (lambda: spingpu.register_model("m", lambda current, x: x * current,
                                    [spingpu.Parameter("x", 1.0, "ohm", "", low=0.0, low_open=True)], replace="no"),
     "replace", ["expected True or False, got 'no'"]),
    (lambda: spingpu.register_model("m", lambda current, x: x * current,
                                    [spingpu.Parameter("x", 1.0, "ohm", "", low=0.0, low_open=True)], description=5),
     "description", ["expected a string, got 5"]),
    (lambda: spingpu.register_model("m", lambda current, x: x * current,
                                    [spingpu.Parameter("x", 1.0, "ohm", "", low=0.0, low_open=True)],
                                    check_derivative=1), "check_derivative", ["expected True or False, got 1"]),
    (lambda: Readout(adc_bits=4).adc("x"), "value", ["expected numbers, got 'x'"]),
    (lambda: load_dataset("iris").standardise(np.zeros((3, 5))), "x_raw", ["expected rows of 4 features, got shape (3, 5)"]),
    (lambda: Backend("cpu", simulator="yes"), "simulator", ["expected True or False"]),
])
def test_bad_nested_configuration(make, field, words):
    with raises(field, *words):
        make()


def test_nested_configuration_stores_converted_values():
    ro = Readout(adc_bits=4.0, adc_range=[-1, 1], temperature=np.float32(77))
    assert ro.adc_bits == 4 and type(ro.adc_bits) is int and ro.adc_range == (-1.0, 1.0)
    assert type(ro.temperature) is float
    be = Backend("cuda", gpu_memory_bytes=1e9, block_threads=64.0, min_blocks_per_sm=2.0)
    assert (be.gpu_memory_bytes, be.block_threads, be.min_blocks_per_sm) == (10**9, 64, 2)
    assert all(type(v) is int for v in (be.gpu_memory_bytes, be.block_threads, be.min_blocks_per_sm))
    assert type(PairNeuron(i_gain=1).i_gain) is float and Schedule("step", every=2.0).every == 2


def test_cuda_settings_of_another_backend_are_warned_of():
    from spingpu import UnusedSettingWarning

    with pytest.warns(UnusedSettingWarning) as caught:
        Backend("cpu", gpu_memory_bytes=10**9, cuda_engine="fused")
    assert [str(w.message) for w in caught] == ["gpu_memory_bytes, cuda_engine: have no effect on the cpu backend "
                                                "(CUDA settings); remove them or use the cuda backend"]
    with pytest.warns(UnusedSettingWarning, match="^block_threads: has no effect on the numpy backend"):
        Backend("numpy", block_threads=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Backend("cpu"), Backend("numpy", cuda_engine="auto"), Backend("cuda", gpu_memory_bytes=10**9, block_threads=64)


# --- train()'s arguments -------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field, words", [
    (dict(networks=[]), "networks", ["is empty"]),
    (dict(networks=[[1, 2]]), "networks", ["expected a 1-D sequence of network indices, got shape (1, 2)"]),
    (dict(networks=[0, -1]), "networks", ["index -1 is out of range; allowed: 0 <= index <= 4294967295"]),
    (dict(networks=[2**32]), "networks", ["index 4294967296 is out of range"]),
    (dict(networks=[3, 1, 3]), "networks", ["index 3 is given more than once"]),
    (dict(networks=[0.5, 1]), "networks", ["expected integer network indices, got dtype float64"]),
    (dict(networks=[True, False]), "networks", ["expected integer network indices, got dtype bool"]),
    (dict(networks="01"), "networks", ["expected a sequence of network indices"]),
    (dict(networks=[1, [2]]), "networks", ["expected integer network indices, got dtype object"]),
    (dict(n_networks=2, networks=[0, 1, 2]), "n_networks", ["2 does not match the 3 networks given"]),
    (dict(), "networks", ["give n_networks or networks"]),
    (dict(n_networks=0), "n_networks", ["0 is out of range"]),
    (dict(n_networks=2.5), "n_networks", ["expected an integer"]),
    (dict(n_networks=2, progress="yes"), "progress", ["expected True or False, got 'yes'"]),
    (dict(n_networks=2, model=5), "model", ["expected a device model or its name", "got int 5"]),
    (dict(n_networks=2, model="nope"), "model", ["unknown device model 'nope'"]),
    (dict(n_networks=2, backend=3), "backend", ["expected a backend name", "got int 3"]),
    (dict(n_networks=2, backend="tpu"), "backend", ["'tpu' (did you mean 'cpu'?); allowed: auto, numpy, cpu, cuda"]),
])
def test_bad_train_arguments(iris, kwargs, field, words):
    with raises(field, *words):
        train(iris, CONFIG, **kwargs)


@pytest.mark.parametrize("dataset, config, field, words", [
    ("iris", CONFIG, "dataset", ["expected a spingpu Dataset (load it with spingpu.load_dataset('iris'))"]),
    (None, CONFIG, "dataset", ["expected a spingpu Dataset, got NoneType None"]),
    ("ds", None, "config", ["expected a spingpu.TrainConfig, got NoneType None"]),
    ("ds", {"epochs": 1}, "config", ["expected a spingpu.TrainConfig (TrainConfig(**values)), got dict"]),
])
def test_train_needs_a_dataset_and_a_config(iris, dataset, config, field, words):
    with raises(field, *words):
        train(iris if dataset == "ds" else dataset, config, n_networks=2)


DISTILLED = TrainConfig(hidden=(2,), epochs=1, distillation=Distillation())


@pytest.mark.parametrize("logits, words", [
    (np.ones((3, 3)), ["shape (3, 3); expected (90, 3) (training rows, classes of iris)"]),
    (np.ones(1), ["shape (1,); expected (90, 3)"]),
    (np.ones((90, 4)), ["shape (90, 4); expected (90, 3)"]),
    (np.full((90, 3), np.nan), ["expected finite numbers, found nan in row 0"]),
    (np.where(np.arange(270).reshape(90, 3) == 250, np.inf, 0.0), ["expected finite numbers, found inf in row 83"]),
    (np.full((90, 3), "1"), ["expected real numbers, got dtype <U1"]),
    ([[1.0, 2.0], [3.0]], ["expected a float array of shape (90, 3)"]),
])
def test_bad_teacher_logits(iris, logits, words):
    for backend in ("cpu", "numpy"):
        with raises("teacher_logits", *words):
            train(iris, DISTILLED, n_networks=2, backend=Backend(backend), teacher_logits=logits)


def test_teacher_logits_without_distillation_is_an_error(iris):
    with raises("teacher_logits", "given, but config.distillation is None"):
        train(iris, CONFIG, n_networks=2, teacher_logits=np.zeros((90, 3)))
    with raises("distillation", "needs teacher_logits"):
        train(iris, DISTILLED, n_networks=2)


def test_validated_arguments_are_converted(iris):
    _, _, networks, model, backend, logits = trainer.check_inputs(
        iris, DISTILLED, networks=[4.0, 2], model="stt_compact", backend="numpy",
        teacher_logits=np.zeros((90, 3), dtype=np.float32))
    assert networks.dtype == np.int64 and networks.tolist() == [4, 2]
    assert model.name == "stt_compact" and backend == Backend("numpy")
    assert logits.dtype == np.float64 and logits.flags.c_contiguous


def test_too_many_networks_for_the_memory_is_one_line(iris, monkeypatch):
    monkeypatch.setattr(trainer, "available_memory", lambda: 10**6)
    per_network = trainer.host_bytes_per_network(iris, CONFIG, get_model("stt_compact"), "cpu")
    fits = 10**6 // per_network
    with raises("networks", f"{10**9} networks need up to", "of memory in this run",
                f"allowed here: at most {fits} networks"):
        train(iris, CONFIG, n_networks=10**9, backend="cpu")
    with raises("networks", f"allowed here: at most {fits} networks"):
        train(iris, CONFIG, networks=np.arange(fits + 1), backend="cpu")
    trainer.check_inputs(iris, CONFIG, n_networks=fits, backend="cpu")  # what fits is accepted
    monkeypatch.setattr(trainer, "available_memory", lambda: per_network - 1)  # not even one network
    with raises("networks", "allowed here: none: one network alone needs"):
        train(iris, CONFIG, n_networks=1, backend="cpu")


def test_model_by_name_and_extreme_parameters_train_without_error(iris):
    """Parameters at the ends of their ranges, spread far by variability, reach the scalar kernels
    of both CPU engines without a division by zero (the networks may diverge; that is a result)."""
    cfg = TrainConfig(hidden=(2,), epochs=1, variability=Variability(sigma_chip=2.0, sigma_d2d=2.0, sigma_pair=2.0))
    for values in (dict(r_p=1.0, v_h=1e-3, i_c=1e-8, tmr0=100.0), dict(r_p=1e7, v_h=1e3, i_c=1.0, tmr0=1e-9),
                   dict(v_h=math.inf)):
        model = get_model("stt_compact", **values)
        for backend in ("cpu", "numpy"):
            result = train(iris, cfg, networks=[0, 7], model=model, backend=backend)
            assert result.test_acc.shape == (2,)
    assert train(iris, CONFIG, n_networks=1, model="stt_compact", backend="cpu").attrs["device_model"] == "stt_compact"


def test_api_calls_with_wrong_kinds_of_argument_are_config_errors():
    import numpy as np

    from spingpu import ConfigError, Parameter, Variability, get_model, open_results, register_model, sample_layer

    model = get_model("stt_compact")
    cases = [
        (lambda: register_model("x_model", voltage=5, parameters=[Parameter("r", 1.0, "ohm", "", low=0.0,
                                                                             low_open=True)]),
         "voltage: expected a function of (current, r), got 5"),
        (lambda: register_model("x_model", voltage=lambda current, a, b: a * current,
                                parameters=[Parameter("a", 1.0, "ohm", "", low=0.0, low_open=True)] * 2),
         "parameters: 'a' is named twice; the parameters need distinct names"),
        (lambda: open_results(42), "results: expected the path of a results store, got 42"),
        (lambda: model.iv("x"), "current: expected numbers, got 'x'"),
        (lambda: model.iv(np.zeros(3), np.tile(model.nominal, (2, 1))),
         "current: shape (3,) does not broadcast against the parameters' (2,)"),
        (lambda: sample_layer(model, Variability(), 0, "abc", 0, 2),
         "networks: expected a sequence of network indices, got 'abc'"),
        (lambda: sample_layer(model, Variability(), 0, [1.5], 0, 2),
         "networks: expected integer network indices, got dtype float64"),
        (lambda: sample_layer(model, Variability(), 0, [[0, 1], [2, 3]], 0, 2),
         "networks: expected a 1-D sequence of network indices, got shape (2, 2)"),
    ]
    for call, message in cases:
        try:
            call()
        except ConfigError as err:
            assert str(err) == message
        else:
            raise AssertionError(f"no error: {message}")
    # sampling a network twice is allowed (a network is trained once, but may be looked at twice)
    twice = sample_layer(model, Variability(sigma_d2d=0.1), 0, [4, 4], 0, 1)
    assert np.array_equal(twice[0], twice[1])


@pytest.mark.parametrize("change, message", [
    (dict(readout=Readout(noise_model="johnson_shot", read_noise=1e-3)),
     'readout.read_noise: 0.001 has no effect: it needs noise_model = "gaussian" (johnson_shot sets its own)'),
    (dict(readout=Readout(temperature=77.0)), 'readout.temperature: 77.0 has no effect: it needs noise_model = '
                                              '"johnson_shot"'),
    (dict(readout=Readout(bandwidth=1e9)), 'readout.bandwidth: 1000000000.0 has no effect: it needs noise_model = '
                                           '"johnson_shot"'),
    (dict(readout=Readout(adc_range=(-2.0, 2.0))), "readout.adc_range: (-2.0, 2.0) has no effect: it needs "
                                                   "adc_bits > 0"),
    (dict(readout=Readout(dac_range=(-2e-3, 2e-3))), "readout.dac_range: (-0.002, 0.002) has no effect: it needs "
                                                     "dac_bits > 0"),
    (dict(neuron=PairNeuron(r_ref=1500.0)), 'neuron.r_ref: 1500.0 has no effect: it needs readout = "bridge"'),
    (dict(momentum=0.5), 'training.momentum: 0.5 has no effect: it needs optimizer = "momentum"'),
    (dict(grad_mode="tanh", variability=Variability(sigma_d2d=0.1)),
     "variability.sigma_d2d: 0.1 has no effect: it needs an MTJ grad_mode (fd_forward, fd_single, fd_symmetric, "
     "model, oracle; tanh, relu, sigmoid networks have no junctions)"),
    (dict(grad_mode="model", neuron=PairNeuron(delta_i=1e-5)), "neuron.delta_i: 1e-05 has no effect: it needs a "
                                                               "finite-difference grad_mode (fd_forward, fd_single, "
                                                               "fd_symmetric)"),
])
def test_a_setting_that_does_nothing_is_warned_of_in_one_line(iris, change, message):
    from spingpu import UnusedSettingWarning
    from spingpu.training.config import unused_settings

    config = dataclasses.replace(CONFIG, **change)
    with pytest.warns(UnusedSettingWarning) as record:
        train(iris, config, n_networks=1, backend="numpy")
    assert [str(w.message) for w in record if w.category is UnusedSettingWarning] == [message]
    assert record[0].filename == __file__  # points at the caller's line
    used = dict(readout=Readout(noise_model="johnson_shot", temperature=77.0, bandwidth=1e9, adc_bits=4,
                                adc_range=(-2.0, 2.0), dac_bits=4, dac_range=(-2e-3, 2e-3)),
                neuron=PairNeuron(readout="bridge", r_ref=1500.0), optimizer="momentum", momentum=0.5)
    assert unused_settings(dataclasses.replace(CONFIG, **used)) == []
    assert unused_settings(CONFIG) == []  # defaults are never unused settings


# A non-default value of every conditional setting, in the configurations (below) that lack what it needs
UNUSED_VALUES = {
    "neuron.i_bias": 1e-4, "neuron.i_gain": 1e-4, "neuron.readout": "bridge", "neuron.v_scale": 2.0,
    "neuron.r_ref": 1500.0, "neuron.delta_i": 1e-5, "variability.sigma_chip": 0.1, "variability.sigma_d2d": 0.1,
    "variability.sigma_pair": 0.1, "variability.per_parameter": {"r_p": (0.0, 0.1, 0.0)},
    "variability.correlation": {("r_p", "tmr0"): 0.5}, "readout.noise_model": "johnson_shot",
    "readout.read_noise": 1e-2, "readout.temperature": 77.0, "readout.bandwidth": 1e9, "readout.adc_bits": 6,
    "readout.adc_range": (-2.0, 2.0), "readout.dac_bits": 6, "readout.dac_range": (-2e-3, 2e-3),
    "training.momentum": 0.5, "training.adam_betas": (0.5, 0.9), "training.adam_eps": 1e-3,
}


def with_setting(config, key, value):
    section, name = key.split(".")
    if section == "training":
        return dataclasses.replace(config, **{name: value})
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **{name: value})})


@pytest.mark.parametrize("base", [
    TrainConfig(hidden=(3,), epochs=2, grad_mode="tanh"),
    TrainConfig(hidden=(3,), epochs=2, grad_mode="model", variability=Variability(sigma_d2d=0.05),
                readout=Readout(read_noise=1e-3)),
    TrainConfig(hidden=(3,), epochs=2, grad_mode="oracle", readout=Readout(noise_model="johnson_shot")),
    TrainConfig(hidden=(3,), epochs=2, variability=Variability(sigma_d2d=0.05, sigma_pair=0.02),
                readout=Readout(noise_model="johnson_shot", bandwidth=1e10)),
    TrainConfig(hidden=(3,), epochs=2, grad_mode="fd_single", readout=Readout(read_noise=1e-3), optimizer="sgd",
                lr=0.1),
], ids=["tanh", "model", "oracle", "fd_forward", "fd_single-sgd"])
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_a_setting_said_to_do_nothing_changes_no_number(iris, base, backend):
    """The rules of CONDITIONAL_SETTINGS checked against training itself (the NumPy and the fused
    engine): each setting whose needs ``base`` lacks, set to another value, leaves every result
    of the run unchanged, and effective_config (by which a study trains such cells once) resets
    it; with what it needs, a setting (a check that the runs can differ at all) changes them."""
    from spingpu.training.config import CONDITIONAL_SETTINGS, effective_config, unmet_needs

    assert set(UNUSED_VALUES) == set(CONDITIONAL_SETTINGS)
    reference = train(iris, base, n_networks=2, backend=backend)
    unused = [key for key in CONDITIONAL_SETTINGS if unmet_needs(base, key)]
    assert unused
    for key in unused:
        changed = with_setting(base, key, UNUSED_VALUES[key])
        assert changed != base and effective_config(changed) == effective_config(base) == base
        with pytest.warns(trainer.UnusedSettingWarning, match=key):
            results = train(iris, changed, n_networks=2, backend=backend)
        for name, values in reference.data_vars.items():
            assert np.array_equal(values, results[name], equal_nan=True), (key, name)
    if base.is_mtj:  # a setting that acts does change them
        results = train(iris, with_setting(base, "neuron.i_gain", 1e-4), n_networks=2, backend=backend)
        assert not np.array_equal(reference.train_loss, results.train_loss)
    else:  # and so would a digital network's
        results = train(iris, dataclasses.replace(base, grad_mode="relu"), n_networks=2, backend=backend)
        assert not np.array_equal(reference.train_loss, results.train_loss)


def test_a_configuration_is_rebuilt_from_its_dict_and_from_a_results_config_attribute(iris):
    """TrainConfig.from_dict reads back as_dict (and its JSON text, a result's ``config`` attribute):
    equal configurations, so a result says exactly what trained it; unknown settings are one line."""
    import json

    from spingpu import Distillation, PairNeuron, Readout, Schedule, Variability

    rng = np.random.default_rng()
    for _ in range(5):
        config = TrainConfig(
            hidden=tuple(int(w) for w in rng.integers(1, 9, rng.integers(1, 4))),
            grad_mode=str(rng.choice(["fd_forward", "fd_symmetric", "model", "tanh"])), epochs=int(rng.integers(1, 50)),
            batch_size=None if rng.random() < 0.5 else int(rng.integers(1, 64)), lr=float(rng.uniform(1e-4, 0.1)),
            lr_schedule=Schedule("exp", gamma=float(rng.uniform(0.5, 1.0))), weight_decay=float(rng.uniform(0, 1e-2)),
            adam_betas=(float(rng.uniform(0.5, 0.99)), 0.999), seed=int(rng.integers(2**63)),
            neuron=PairNeuron(readout="bridge", r_ref=float(rng.uniform(500, 2000)), delta_i=float(rng.uniform(1e-6, 1e-4))),
            variability=Variability(float(rng.uniform(0, 0.1)), float(rng.uniform(0, 0.3)), 0.02,
                                    per_parameter={"r_p": (0.0, float(rng.uniform(0, 0.2)), 0.0)},
                                    correlation={("r_p", "tmr0"): float(rng.uniform(-0.9, 0.9))}),
            readout=Readout(read_noise=float(rng.uniform(0, 1e-2)), adc_bits=int(rng.integers(0, 12))),
            distillation=None if rng.random() < 0.5 else Distillation(float(rng.uniform(1, 5)), float(rng.uniform(0, 1))),
            dtype=str(rng.choice(["float32", "float64"])))
        assert TrainConfig.from_dict(config.as_dict()) == config
        assert TrainConfig.from_dict(json.dumps(config.as_dict())) == config
    config = TrainConfig(hidden=(3,), epochs=1, readout=Readout(read_noise=1e-3), lr_schedule="step:2:0.5")
    results = train(iris, config, n_networks=2, backend="numpy")
    assert TrainConfig.from_dict(results.attrs["config"]) == config
    with raises("config.neuron.v_scal", "unknown setting (did you mean 'v_scale'?)"):
        TrainConfig.from_dict({"neuron": {"v_scal": 1.0}})
    with raises("config", "expected a mapping (TrainConfig.as_dict()) or its JSON text, got 3"):
        TrainConfig.from_dict(3)


@pytest.mark.parametrize("build, message", [
    (lambda: spingpu.PairNeuron(delta_i=10.0), "delta_i: 10.0 is out of range; allowed: 0 < value <= 1 (A)"),
    (lambda: spingpu.PairNeuron(r_ref=-1.0), "r_ref: -1.0 is out of range; allowed: 0 <= value <= 1e9 (ohm)"),
    (lambda: spingpu.Readout(read_noise=2.0), "read_noise: 2.0 is out of range; allowed: 0 <= value <= 1 (V)"),
    (lambda: spingpu.Readout(bandwidth=0.0), "bandwidth: 0.0 is out of range; allowed: 0 < value <= 1e12 (Hz)"),
    (lambda: spingpu.get_model("stt_compact", i_c=2.0), "param i_c: 2.0 is out of range; allowed: 1e-8 <= value <= 1 (A)"),
    (lambda: spingpu.get_model("macrospin", table_i_max=5.0),
     "param table_i_max: 5.0 is out of range; allowed: -1 <= value <= 1 (A)"),
    (lambda: spingpu.get_model("stt_compact", tmr0=0.0), "param tmr0: 0.0 is out of range; allowed: 0 < value <= 100"),
])
def test_a_value_out_of_range_is_refused_with_its_unit(build, message):
    """A value in another unit than the SI one (10 for 10 uA) shows why: the range carries the unit
    (none for a ratio)."""
    with pytest.raises(ConfigError) as err:
        build()
    assert str(err.value) == message


def test_a_config_error_is_one_bounded_line_that_keeps_its_allowed_range():
    import pickle

    from spingpu.errors import MAX_FIELD, MAX_PROBLEM

    rng = np.random.default_rng()
    key = "k\n" * int(rng.integers(200, 400))
    value = "v\r\n" * int(rng.integers(1000, 3000))
    err = ConfigError(key, f"got {value}; allowed: 1 <= value <= 1e7 (ohm)")
    text = str(err)
    assert "\n" not in text and "\r" not in text and text.endswith("; allowed: 1 <= value <= 1e7 (ohm)")
    assert len(err.field) == MAX_FIELD and err.field.startswith("k\\nk\\n") and err.field.endswith("k\\n")
    assert "..." in err.field
    path_key = ConfigError("/a" * 150 + "/study.toml: training.lr", "-1 is out of range")  # a long study path
    assert path_key.field.endswith("/study.toml: training.lr") and path_key.field.startswith("/a/a")
    assert len(err.problem) <= MAX_PROBLEM and err.problem.startswith("got v\\r\\nv\\r\\n") and " ... " in err.problem
    assert str(pickle.loads(pickle.dumps(err))) == text  # as a Dask worker's error comes back
    assert str(ConfigError("lr", "-1.0 is out of range; allowed: 0 < value <= 100")) == \
        "lr: -1.0 is out of range; allowed: 0 < value <= 100"  # a short one as it is


@pytest.mark.parametrize("n, noun, text", [(1, "cell", "1 cell"), (0, "cell", "0 cells"), (3, "network", "3 networks"),
                                           (1, "worker process", "1 worker process"),
                                           (2, "worker process", "2 worker processes"), (4, "batch", "4 batches")])
def test_a_count_names_its_noun_in_the_plural_unless_it_is_one(n, noun, text):
    from spingpu.errors import count_text

    assert count_text(n, noun) == text


@pytest.mark.parametrize("number, text", [(1e7, "1e7"), (10000000, "10000000"), (0.0, "0"), (1e-3, "0.001"),
                                          (math.pi, "3.141592653589793"), (-2.5e-9, "-2.5e-9"), (1e300, "1e300"),
                                          (float("inf"), "inf"), (float("-inf"), "-inf"), (float("nan"), "nan"),
                                          (np.float32(0.1), "0.10000000149011612"), (np.int64(-3), "-3")])
def test_a_ranges_end_is_written_as_the_shortest_text_that_reads_back(number, text):
    from spingpu.errors import bound_text

    assert bound_text(number) == text
    if math.isfinite(float(number)):
        assert float(text) == float(number)


@pytest.mark.parametrize("text, every, gamma", [("step:1e3:0.5", 1000, 0.5), ("step:2.0:.5", 2, 0.5),
                                                ("exp:5e-1", 1, 0.5), ("exp:+0.25", 1, 0.25),
                                                ("step: 100:0.5", 100, 0.5), ("exp: 0.99 ", 1, 0.99)])
def test_a_schedules_numbers_are_decimals_as_written(text, every, gamma):
    from spingpu import Schedule

    schedule = Schedule.parse(text)
    assert (schedule.every, schedule.gamma) == (every, gamma)
    assert Schedule.parse(str(schedule)) == schedule


@pytest.mark.parametrize("text", ["exp:1_0", "exp:\uff15", "exp:\n0.5", "step:2.5:0.5", "step:0x10:0.5", "exp:",
                                  "step:1e40:0.5"])
def test_a_schedule_that_python_would_read_but_is_not_a_decimal_is_refused(text):
    """float() reads 1_0 as 10 and a full-width 5 as 5: a typo would pass as a number."""
    from spingpu import Schedule

    with pytest.raises(ConfigError) as err:
        Schedule.parse(text)
    assert str(err.value) == (f"lr_schedule: {ConfigError('', repr(text)).problem}; allowed: constant, "
                              "step:EVERY:GAMMA, exp:GAMMA, cosine")


@pytest.mark.parametrize("cls, typo, meant", [
    (TrainConfig, "grad_mod", "grad_mode"), (Variability, "sigma_d2", "sigma_d2d"), (Readout, "read_nois", "read_noise"),
    (PairNeuron, "delta_I", "delta_i"), (Distillation, "temprature", "temperature"), (Schedule, "gama", "gamma")])
def test_a_misspelt_setting_is_one_line_naming_the_closest(cls, typo, meant):
    """A keyword no setting has: ConfigError naming it, the closest and every allowed setting (was
    Python's TypeError "unexpected keyword argument"); the settings themselves still construct."""
    with pytest.raises(ConfigError) as err:
        cls(**{typo: 1})
    names = [f.name for f in dataclasses.fields(cls)]
    assert str(err.value) == (f"{typo}: not a setting of {cls.__name__} (did you mean {meant!r}?); allowed: "
                              f"{', '.join(names)}")
    assert err.value.field == typo
    made = cls() if cls is not Schedule else cls("exp", gamma=0.9)
    assert dataclasses.replace(made) == made


def test_an_unknown_device_model_says_how_to_add_ones_own():
    with pytest.raises(ConfigError) as err:
        get_model("stt_compakt")
    text = str(err.value)  # the allowed list holds any model another test registered in this process
    assert text.startswith("model: unknown device model 'stt_compakt' (did you mean 'stt_compact'?); allowed: ")
    assert text.endswith("stt_compact, stt_compact_f32, tabulated, or a model of your own registered with "
                         "spingpu.register_model (in a study, by the file its [model] module names; for spingpu "
                         "train and devices, by --model-file)")


@pytest.mark.parametrize("word, meant", [("STT_COMPACT_F32", "stt_compact_f32"), ("Stt_Compact", "stt_compact"),
                                         ("MacroSpin", "macrospin")])
def test_a_model_name_in_other_letter_case_is_suggested(word, meant):
    with pytest.raises(ConfigError, match=rf"^model: unknown device model '{word}' \(did you mean '{meant}'\?\)"):
        get_model(word)


@pytest.mark.parametrize("word", ["gpu", "GPU", "cupy"])
def test_a_backend_named_by_what_it_runs_on_suggests_cuda(word, capsys):
    """``gpu`` is spelt like ``cpu``: the suggestion is the backend it means, in the API and the CLI."""
    from spingpu import Backend
    from spingpu.cli.main import main

    with pytest.raises(ConfigError, match=rf"^backend: '{word}' \(did you mean 'cuda'\?\); allowed: auto, numpy, cpu, cuda$"):
        Backend(word)
    assert main(["train", "--backend", word, "--networks", "1", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(did you mean 'cuda'?)" in err

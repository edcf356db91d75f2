"""Study files (TOML): what to train, over which sweep axes, how many networks per cell.

A study is validated completely before anything runs: every key is known (else a did-you-mean),
every value has the right type and range, the dataset and data files exist, and the configuration
of every cell of the sweep builds. Errors are ConfigError with field ``"<file>: <key>"``.

Layout (every table optional except ``dataset``; defaults as in the Python API)::

    name = "quickstart"            # default: the file's stem
    description = "..."
    networks = 200                 # networks per cell
    seed = 0
    [dataset]      name ("iris", "digits", "mnist", "csv:PATH"), data_dir, val_fraction,
                   test_fraction, max_train
    [model]        name, iv_csv, module (a Python file registering models), and [model.params]
                   nominal values in SI units
    [network]      hidden = [8, 8]
    [neuron]       i_bias, i_gain, readout, r_ref, v_scale, delta_i
    [training]     grad_mode, epochs, batch_size, optimizer, lr, lr_schedule, weight_decay,
                   momentum, init_gain, dtype
    [distillation] temperature, alpha, and [distillation.teacher] hidden, grad_mode, epochs,
                   batch_size, optimizer, lr
    [variability]  sigma_chip, sigma_d2d, sigma_pair, [variability.per_parameter] NAME =
                   [chip, d2d, pair], [variability.correlation] "A,B" = rho
    [readout]      noise_model, read_noise, temperature, bandwidth, adc_bits, adc_range,
                   dac_bits, dac_range
    [sweep]        "section.key" = [values] | {linspace = [a, b, n]} | {logspace = [a, b, n]}
    [cluster]      keyword arguments of dask-jobqueue's SLURMCluster / PBSCluster, and jobs = N

Relative paths are taken from the study file's folder. Every cell trains networks 0 .. networks-1,
so cells differ only by the swept values (common random numbers: network k has the same junction
draws, initial weights and noise streams in every cell).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import sys
import tomllib
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets import csv_path, dataset_key, load_dataset
from ..errors import ConfigError, _short, did_you_mean
from ..training.config import CONDITIONAL_SETTINGS, CONFIG_UNITS, effective_config, needs_text, unmet_needs

# section -> {key: type check}
_NUM = (int, float)
SCHEMA = {
    "": {"name": str, "description": str, "networks": int, "seed": int},
    "dataset": {"name": str, "data_dir": str, "val_fraction": _NUM, "test_fraction": _NUM, "max_train": int,
                "split_seed": int},
    "model": {"name": str, "iv_csv": str, "module": str, "params": dict},
    "network": {"hidden": list},
    "neuron": {"i_bias": _NUM, "i_gain": _NUM, "readout": str, "r_ref": _NUM, "v_scale": _NUM, "delta_i": _NUM},
    "training": {"grad_mode": str, "epochs": int, "batch_size": int, "optimizer": str, "lr": _NUM,
                 "lr_schedule": str, "weight_decay": _NUM, "momentum": _NUM, "init_gain": _NUM, "dtype": str},
    "distillation": {"temperature": _NUM, "alpha": _NUM, "teacher": dict},
    "distillation.teacher": {"hidden": list, "grad_mode": str, "epochs": int, "batch_size": int, "optimizer": str,
                             "lr": _NUM},
    "variability": {"sigma_chip": _NUM, "sigma_d2d": _NUM, "sigma_pair": _NUM, "per_parameter": dict,
                    "correlation": dict},
    "readout": {"noise_model": str, "read_noise": _NUM, "temperature": _NUM, "bandwidth": _NUM, "adc_bits": int,
                "adc_range": list, "dac_bits": int, "dac_range": list},
    "sweep": None,  # free keys, checked against the other sections
    "cluster": None,  # free keys, passed to dask-jobqueue
}
SWEEPABLE = {f"{section}.{key}" for section, keys in SCHEMA.items() if keys and section
             and section not in ("distillation.teacher",) for key, kind in keys.items() if kind not in (dict, list)}
SWEEPABLE |= {"model.name", "network.hidden"}
SWEEPABLE -= {"model.module"}  # run once, before the cells are built: the models of every cell
# what each sweepable key is, as a figure's axis names it (a model parameter: its Parameter.description)
KEY_NAMES = {
    "dataset.name": "dataset", "dataset.val_fraction": "validation fraction", "dataset.test_fraction": "test fraction",
    "dataset.max_train": "cap on training samples", "dataset.split_seed": "split seed", "dataset.data_dir": "data folder",
    "model.name": "junction model", "model.iv_csv": "measured I-V curve", "network.hidden": "hidden layers",
    "neuron.i_bias": "bias current", "neuron.i_gain": "current per unit of pre-activation",
    "neuron.readout": "readout", "neuron.r_ref": "bridge reference resistance",
    "neuron.v_scale": "activation per volt", "neuron.delta_i": "finite-difference step dI",
    "training.grad_mode": "gradient mode", "training.epochs": "epochs", "training.batch_size": "batch size",
    "training.optimizer": "optimiser", "training.lr": "learning rate", "training.lr_schedule": "learning-rate schedule",
    "training.weight_decay": "weight decay", "training.momentum": "momentum", "training.init_gain": "initial-weight gain",
    "training.dtype": "floating-point type",
    "distillation.temperature": "distillation temperature", "distillation.alpha": "weight of the distillation term",
    "variability.sigma_chip": "chip-to-chip spread", "variability.sigma_d2d": "device-to-device spread",
    "variability.sigma_pair": "spread within a pair",
    "readout.noise_model": "read-noise model", "readout.read_noise": "rms read noise",
    "readout.temperature": "junction temperature", "readout.bandwidth": "read bandwidth",
    "readout.adc_bits": "ADC bits", "readout.dac_bits": "DAC bits",
}
# the results' dimension of a key whose last part would not say what it holds (``name``)
DIM_NAMES = {"model.name": "model", "dataset.name": "dataset"}
MAX_CELLS = 100_000


def _err(path, key, problem):
    return ConfigError(f"{path}: {key}" if key else str(path), problem)


@dataclass(frozen=True)
class Axis:
    """One sweep axis: the dotted study key, the dimension name, its values, their SI unit and
    what the key is (KEY_NAMES; a model parameter's description)."""

    key: str
    dim: str
    values: tuple
    units: str
    long_name: str = ""

    @property
    def numeric(self):
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values)

    @property
    def coordinate(self):
        """The values as the store's coordinate holds them: numbers, else strings."""
        return np.array(self.values) if self.numeric else np.array([str(v) for v in self.values])


@dataclass(frozen=True)
class Study:
    """A parsed, validated study. ``text`` is the file's text; ``data`` the parsed tables."""

    name: str
    path: str
    text: str
    data: dict
    axes: tuple[Axis, ...]
    networks: int
    seed: int
    inputs: tuple = ()  # ((path, sha256 of its contents), ...) of every data file the study reads
    # SPINGPU_DATA where the study was loaded (absolute; "" if unset): the MNIST folder of the cells
    # that name none, on every worker whatever its own environment (whose files the inputs hashed)
    mnist_dir: str = ""

    @property
    def shape(self):
        return tuple(len(a.values) for a in self.axes)

    @property
    def n_cells(self):
        return math.prod(self.shape)

    @property
    def model_names(self):
        """Names of the device models its cells use (``model.name``, or its sweep)."""
        swept = next((a.values for a in self.axes if a.key == "model.name"), None)
        return tuple(swept) if swept is not None else (self.data.get("model", {}).get("name", "stt_compact"),)

    def device_models(self):
        """{model name: :func:`~spingpu.devices.models.model_attrs`} of each device model the
        cells use, as the first cell that uses it builds it (a swept model parameter has that
        cell's value there; its coordinate holds them all)."""
        from ..devices.models import model_attrs

        out, names = {}, set(self.model_names)
        for flat in range(self.n_cells):
            if len(out) == len(names):
                break
            model = self.cell(flat).model
            out.setdefault(model.name, model_attrs(model))
        return out

    @property
    def max_epochs(self):
        return max(self.cell(c).config.epochs for c in range(self.n_cells))

    @property
    def digest(self):
        """sha256 of what determines the numbers: the parsed tables (less ``description``, which
        only describes them) and the contents of the data files they name (``inputs``), not where
        the files are. Each data file path of the tables (``csv:PATH``, ``data_dir``,
        ``model.iv_csv``) counts as the sha256 of what it names, so a study folder moved or copied
        elsewhere keeps its digest; swept paths count as written (they label the store's
        coordinates) and by the contents they name. A study that reads no data file has the digest
        of its tables alone, as before data files were hashed."""
        return self._digest({k: v for k, v in self.data.items() if k != "description"})

    def _digest(self, data):
        hashes = dict(self.inputs)
        swept_keys = {a.key for a in self.axes}
        blob = json.dumps(_portable_tables(data, hashes, swept_keys), sort_keys=True, default=str).encode()
        if self.inputs:
            swept = {a.key: [_file_token(a.key, v, Path(self.path).parent, hashes) for v in a.values]
                     for a in self.axes if a.key in FILE_KEYS}
            blob += json.dumps({"inputs": sorted(hashes.values()), "swept": swept}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def digests(self):
        """Every digest a store of this study may carry: :attr:`digest`; the one of spingpu before
        the description was left out (a store made then with the same description); and the one
        before moved folders kept theirs (resolved paths and inputs hashed as they stand), which a
        store written then from this very folder carries."""
        blob = json.dumps(self.data, sort_keys=True, default=str).encode()
        if self.inputs:
            blob += json.dumps([list(item) for item in self.inputs]).encode()
        return self.digest, self._digest(self.data), hashlib.sha256(blob).hexdigest()

    def cell_index(self, flat):
        return np.unravel_index(flat, self.shape) if self.axes else ()

    def cell_values(self, flat):
        return {a.key: a.values[i] for a, i in zip(self.axes, self.cell_index(flat))}

    def cell_text(self, flat, prefix=""):
        """Cell ``flat`` as its swept values, ``KEY=VALUE, ...`` (the keys beginning with ``prefix``;
        "" for a study without a sweep)."""
        return ", ".join(f"{k}={v}" for k, v in self.cell_values(flat).items() if k.startswith(prefix))

    def cell(self, flat, unswept=(), models=None):
        """The :class:`Cell` (configuration, model, dataset arguments) of cell number ``flat``;
        the swept keys in ``unswept`` keep the value set in their tables. ``models``: {name: model}
        to take before this process's registry (a worker's shipped models)."""
        data = json.loads(json.dumps(self.data))  # a deep copy
        for key, value in self.cell_values(flat).items():
            if key in unswept:
                continue
            section, name = key.rsplit(".", 1)
            target = data.setdefault(section, {}) if section != "model.params" else \
                data.setdefault("model", {}).setdefault("params", {})
            target[name] = list(map(int, value.split("-"))) if key == "network.hidden" else value
        resolve_paths(data, Path(self.path).parent)
        dataset = data["dataset"]
        if self.mnist_dir and not dataset.get("data_dir") and str(dataset.get("name")).strip().lower() == "mnist":
            dataset["data_dir"] = self.mnist_dir
        return build_cell(self.path, data, models, self.model_names)


@dataclass(frozen=True)
class Cell:
    config: object  # TrainConfig
    model: object  # DeviceModel
    dataset: dict  # keyword arguments of load_dataset, with "name"
    teacher: object | None  # TrainConfig of the digital teacher, with distillation


def load_study(path):
    """Parse and validate a study file; raise ConfigError naming the file and key."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError("study", f"expected the path of a study .toml file, got {path!r}")
    path = Path(path)
    if path.is_dir():
        raise ConfigError("study", f"{path} is a folder, expected a study .toml file")
    if not path.is_file():
        raise ConfigError("study", f"file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise _err(path, "", f"cannot be read: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not TOML's
    except UnicodeDecodeError as err:
        raise _err(path, "", f"not a text file: byte 0x{raw[err.start]:02x} at offset {err.start} is not "
                             "UTF-8; a study file is UTF-8 TOML") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise _err(path, "", f"not valid TOML: {err}") from None
    except ValueError:  # Python's limit on the digits of an integer read from text
        raise _err(path, "", f"not valid TOML: an integer of more than {sys.get_int_max_str_digits()} "
                             "digits") from None
    return parse_study(data, path, text)


def parse_study(data, path, text=""):
    path = Path(path)
    _check_keys(data, path)
    name = _check_name(path, data.get("name", path.stem), "name" in data)
    if "dataset" not in data or "name" not in data["dataset"]:
        raise _err(path, "dataset.name", "missing; allowed: iris, digits, mnist, csv:PATH")
    resolve_paths(data, path.parent)
    registered = _run_model_file(data, path)
    study = _study(data, path, text, name)
    if registered is not None and not set(registered) & set(study.model_names):  # the file would do nothing
        from ..devices.model_files import registers_text

        raise _err(path, "model.module", f"{data['model']['module']} {registers_text(registered)}, and no cell uses "
                                         f"it (model.name: {', '.join(map(repr, study.model_names))}): name one of its "
                                         "models in model.name (or its sweep), or remove model.module")
    if study.n_cells > MAX_CELLS:
        raise _err(path, "sweep", f"{study.n_cells} cells; at most {MAX_CELLS}")
    _check_not_fixed_and_swept(study, path)
    configs = []
    for flat in range(study.n_cells):  # every cell must build
        try:
            configs.append(study.cell(flat).config)
        except ConfigError as err:
            raise _err(path, err.field, err.problem + _cell_of_error(study, flat, err)) from None
    _check_settings_used(study, configs, path)
    _check_model_settings_used(study, path)
    _check_dataset(study, path)
    folder = os.environ.get("SPINGPU_DATA")
    return dataclasses.replace(study, inputs=input_hashes(study),
                               mnist_dir=os.path.abspath(os.path.expanduser(folder)) if folder else "")


def _run_model_file(data, path):
    """Run the Python file of ``[model] module`` (path resolved), which registers the study's own
    device models (:mod:`spingpu.devices.model_files`): the names it registers (None: no file);
    ConfigError naming the file and key."""
    module = data.get("model", {}).get("module")
    if module is None:
        return None
    from ..devices.model_files import run_model_file

    if not module.strip() or not Path(module).is_file():
        raise _err(path, "model.module", f"{module!r} is not a file; expected the path of a Python file that "
                                         "calls spingpu.register_model (relative to the study file)")
    try:
        return run_model_file(module)
    except ConfigError as err:
        raise _err(path, err.field, err.problem) from None


def _study(data, path, text, name):
    """The :class:`Study` of tables ``data`` whose paths are resolved: its networks, seed and sweep
    axes read and range-checked (not its cells)."""
    networks = _ranged(path, "networks", data.get("networks", 100), 1, 10**9)
    seed = _ranged(path, "seed", data.get("seed", 0), 0, 2**64 - 1)
    axes = tuple(_with_parameter_unit(axis, data) for axis in _parse_sweep(data.get("sweep", {}), path))
    return Study(name=name, path=str(path), text=text, data={k: v for k, v in data.items() if k != "cluster"},
                 axes=axes, networks=networks, seed=seed)


def stored_study(attrs):
    """The :class:`Study` a results store was made for, rebuilt from the store's attributes
    (``study_data``, ``study_text``, ``study_name``, ``input_files``, ``sweep_axes``) without reading
    any file: the data file paths in its tables are absolute, as :func:`parse_study` left them. The
    axes are in the store's order (``study_data`` holds the tables with sorted keys)."""
    name = attrs.get("study_name", "study")
    data = json.loads(attrs["study_data"])
    inputs = tuple(map(tuple, json.loads(attrs.get("input_files", "[]"))))
    module = data.get("model", {}).get("module")
    if module and (str(Path(module).resolve()), _sha256_or_none(module)) in inputs:  # its models, as the run had them
        with contextlib.suppress(ConfigError):
            _run_model_file(data, Path(f"{name}.toml"))
    study = _study(data, Path(f"{name}.toml"), attrs.get("study_text", ""), name)
    order = json.loads(attrs.get("sweep_axes", "[]"))
    axes = tuple(sorted(study.axes, key=lambda a: order.index(a.dim) if a.dim in order else len(order)))
    return dataclasses.replace(study, axes=axes, inputs=inputs)


def _with_parameter_unit(axis, data):
    """A ``model.params.NAME`` axis gets the SI unit of the parameter or setting (``macrospin``'s
    temperature, dt, ...) NAME of the study's model (of the first model that has it, where
    ``model.name`` is swept too), and a parameter's description as its long name."""
    if not axis.key.startswith("model.params."):
        return axis
    from ..devices import get_model

    name = axis.key.rsplit(".", 1)[1]
    model_axis = next((a for a in data.get("sweep", {}) if a == "model.name"), None)
    models = data["sweep"][model_axis] if model_axis else [data.get("model", {}).get("name", "stt_compact")]
    for model_name in models if isinstance(models, list) else []:
        try:
            model = get_model(model_name)
        except ConfigError:
            continue
        parameter = next((p for p in model.parameters if p.name == name), None)
        unit = parameter.unit if parameter else model.settings_units.get(name)
        if unit is not None:
            return dataclasses.replace(axis, units=unit, long_name=parameter.description if parameter else "")
    return axis


NAME_RE = re.compile(r"[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]{0,199}")


def _check_name(path, name, given):
    """The study's name, which names its default store ``results/<name>.zarr``: one plain path
    component (no folders, not hidden, not empty, no control or format characters: a right-to-left
    override would show another file name than the one made) of at most 200 bytes in UTF-8, so
    that ``<name>.summary.csv`` fits the 255 bytes most file systems allow a name."""
    invisible = any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in name)
    if (not NAME_RE.fullmatch(name) or invisible or name.strip() != name
            or len(name.encode("utf-8", "surrogatepass")) > 200):
        where = "" if given else " (the study file's name without .toml; set name = \"...\" in the file)"
        raise _err(path, "name", f"{name!r}{where} is not a plain name; allowed: 1-200 characters (bytes in UTF-8) "
                                 "without '/', '\\' or control or format characters, not starting with '.' or a space")
    return name


FILE_KEYS = ("dataset.name", "dataset.data_dir", "model.iv_csv", "model.module")
"""The study keys that name data files (dataset.name only as ``csv:PATH``)."""


def input_files(data):
    """The data files a cell's tables (paths resolved) make the study read: a csv: dataset,
    the MNIST files of data_dir (or SPINGPU_DATA), and model.iv_csv; those that exist."""
    from ..datasets import mnist_files

    files = []
    dataset, model = data.get("dataset", {}), data.get("model", {})
    name = dataset.get("name")
    if csv_path(name):
        files.append(csv_path(name))
    if isinstance(name, str) and name.strip().lower() == "mnist":
        folder = dataset.get("data_dir") or os.environ.get("SPINGPU_DATA")
        if folder:
            files += mnist_files(os.path.expanduser(str(folder))).values()
    for key in ("iv_csv", "module"):
        if isinstance(model.get(key), str):
            files.append(model[key])
    return [str(Path(f).resolve()) for f in files if Path(f).is_file()]


def input_hashes(study):
    """((path, sha256), ...) of every data file any cell of ``study`` reads, sorted by path."""
    swept = [a for a in study.axes if a.key.rsplit(".", 1)[0] in ("dataset", "model")]
    paths = set()
    for combo in itertools.product(*[a.values for a in swept]):
        data = json.loads(json.dumps({k: study.data.get(k, {}) for k in ("dataset", "model")}))
        for axis, value in zip(swept, combo):
            section, name = axis.key.rsplit(".", 1)
            data.setdefault(section, {})[name] = value
        resolve_paths(data, Path(study.path).parent)
        paths.update(input_files(data))
    hashes = []
    for path in sorted(paths):
        try:
            hashes.append((path, file_sha256(path)))
        except OSError as err:
            raise _err(study.path, "", f"cannot read the data file {path}: {err.strerror or err}") from None
    return tuple(hashes)


def _sha256_or_none(path):
    try:
        return file_sha256(path)
    except OSError:
        return None


def file_sha256(path):
    """The SHA-256 of a file's contents, in hex (OSError where it cannot be read)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def changed_inputs(study):
    """The first data file recorded in ``study.inputs`` when it ran (absolute paths, as they were
    then; through links, the file there now) whose contents now differ, or None (a file that is
    gone is left to the code that reads it)."""
    for path, digest in study.inputs:
        try:
            if file_sha256(path) != digest:
                return path
        except OSError:
            continue
    return None


def _absolute(value, base):
    """A study's path ``value`` (``~`` expanded) as an absolute path, a relative one taken from
    ``base``; "" stays "" (the loaders' "none given")."""
    if not value.strip():
        return value
    path = Path(os.path.expanduser(value))  # unchanged where there is no home folder
    return str(path) if path.is_absolute() else str((Path(base) / path).resolve())


def resolve_paths(data, base):
    """Make the study's file paths (dataset.data_dir, csv: datasets, model.iv_csv) absolute,
    taking relative ones from ``base`` (the study file's folder). Changes ``data`` in place."""
    dataset, model = data.get("dataset", {}), data.get("model", {})
    if isinstance(dataset.get("data_dir"), str):
        dataset["data_dir"] = _absolute(dataset["data_dir"], base)
    if csv_path(dataset.get("name")):
        dataset["name"] = "csv:" + _absolute(csv_path(dataset["name"]), base)
    for key in ("iv_csv", "module"):
        if isinstance(model.get(key), str):
            model[key] = _absolute(model[key], base)
    return data


def _file_token(key, value, base, hashes):
    """What the value of a FILE_KEYS ``key`` stands for in the digest: ``sha256:HASH`` of the
    contents of the file it names (for data_dir, of the files the loader reads in it) where
    ``hashes`` ({resolved path: sha256}, the study's inputs) has them, else the value unchanged."""
    if not isinstance(value, str):
        return value
    if key == "dataset.name":
        path = csv_path(value)
        return "csv:" + _file_token("model.iv_csv", path, base, hashes) if path else value
    if not value.strip():
        return value
    path = Path(_absolute(value, base)).resolve()
    if key == "dataset.data_dir":  # the MNIST files in the folder, or an .npz named directly
        found = sorted(h for p, h in hashes.items() if Path(p) == path or Path(p).parent == path)
        return "sha256:" + hashlib.sha256(json.dumps(found).encode()).hexdigest() if found else value
    return f"sha256:{hashes[str(path)]}" if str(path) in hashes else value


def _portable_tables(data, hashes, swept_keys):
    """A copy of a study's tables (paths resolved) with the data file paths of [dataset] and
    [model] replaced by their :func:`_file_token` (by a mark where a sweep of the key replaces the
    path in every cell: no cell reads it); the [sweep] table as written."""
    data = json.loads(json.dumps(data))
    for key in FILE_KEYS:
        section, name = key.split(".")
        table = data.get(section)
        if not isinstance(table, dict) or not isinstance(table.get(name), str):
            continue
        value = table[name]
        names_file = csv_path(value) if key == "dataset.name" else value.strip()
        if key in swept_keys and names_file:
            table[name] = "(swept)"
        else:
            table[name] = _file_token(key, value, "/", hashes)
    return data


def _check_keys(data, path):
    for key, value in data.items():
        if key in SCHEMA and SCHEMA[key] is not None and key != "":
            if not isinstance(value, dict):
                raise _err(path, key, f"expected a table [{key}]")
            _check_section(value, key, path)
        elif key not in SCHEMA[""] and key not in SCHEMA:
            raise _unknown_key(path, key, key, [*SCHEMA[""], *(s for s in SCHEMA if s and "." not in s)],
                               "at the top level")
        elif key in SCHEMA[""]:
            data[key] = _check_type(value, SCHEMA[""][key], path, key)
        elif SCHEMA[key] is None and not isinstance(value, dict):
            raise _err(path, key, f"expected a table [{key}]")


def _check_section(table, section, path):
    allowed = SCHEMA[section]
    for key, value in table.items():
        full = f"{section}.{key}"
        if key not in allowed:
            raise _unknown_key(path, full, key, list(allowed), f"in [{section}]")
        if allowed[key] is dict and f"{section}.{key}" in SCHEMA:
            if not isinstance(value, dict):
                raise _err(path, full, f"expected a table [{full}]")
            _check_section(value, full, path)
        else:
            table[key] = _check_type(value, allowed[key], path, full)


def _unknown_key(path, full, key, allowed, where):
    """The error of an unknown ``key`` (``full``: its dotted name): a did-you-mean and the keys
    ``allowed`` ``where`` it is written."""
    return _err(path, full, f"unknown key{did_you_mean(key, allowed)}; allowed {where}: {', '.join(allowed)}")


def _check_type(value, kind, path, key):
    """``value`` if it is of ``kind``, as the Python API takes it: a whole number written as a float
    (2.0, 1e3) for an integer, one integer for a list of layer widths (``hidden = 8``: one layer)."""
    if kind is int and isinstance(value, float) and value.is_integer() and abs(value) <= 2.0**64:
        return int(value)
    if kind is list and key.endswith(".hidden") and isinstance(value, int) and not isinstance(value, bool):
        return [value]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = "a number" if kind == _NUM else " or ".join(
            {int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table"}[k]
            for k in kinds)
        raise _err(path, key, f"expected {names}, got {_short(value)}")
    return value


def _ranged(path, key, value, lo, hi):
    """The integer ``value`` of ``key``, else ConfigError worded as spingpu.errors.check_range's."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(path, key, f"expected an integer, got {_short(value)}; allowed: {lo} <= value <= {hi}")
    if not lo <= value <= hi:
        raise _err(path, key, f"{value} is out of range; allowed: an integer, {lo} <= value <= {hi}")
    return value


def _is_spacing(spec):
    """Whether a sweep's table is its values' spacing: {linspace = [...]} or {logspace = [...]}."""
    return len(spec) == 1 and next(iter(spec)) in ("linspace", "logspace")


def _dotted_keys(prefix, table):
    """The dotted keys of a [sweep] table's nested tables: TOML's reading of unquoted ones."""
    for key, value in table.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict) and value and not _is_spacing(value):
            yield from _dotted_keys(name, value)
        else:
            yield name


def _parse_sweep(sweep, path):
    axes = []
    for key, spec in sweep.items():
        field = f"sweep.{key}"
        is_param = key.startswith("model.params.")
        if key not in SWEEPABLE and not is_param and isinstance(spec, dict) and not _is_spacing(spec):
            dotted = next(_dotted_keys(key, spec))  # neuron.delta_i = [...] unquoted: TOML's table neuron
            raise _err(path, field, f"a table, as TOML reads an unquoted dotted key: quote the key, "
                                    f"\"{dotted}\" = [...]")
        if key not in SWEEPABLE and not is_param:
            raise _err(path, field, f"not a sweepable key{did_you_mean(key, sorted(SWEEPABLE))}; allowed: "
                                    f"{', '.join(sorted(SWEEPABLE))} or model.params.NAME")
        if key == "network.hidden" and not isinstance(spec, list):
            raise _err(path, field, "values must be lists of widths, e.g. [[8], [8, 8]]")
        if isinstance(spec, dict):
            if not _is_spacing(spec):
                raise _err(path, field, "a table must be {linspace = [start, stop, num]} or "
                                        "{logspace = [start_exponent, stop_exponent, num]}")
            kind, args = next(iter(spec.items()))
            if (not isinstance(args, list) or len(args) != 3
                    or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
                    or not isinstance(args[2], int) or args[2] < 1):
                raise _err(path, field, f"{kind} takes [start, stop, num] with an integer num >= 1")
            if args[2] > MAX_CELLS:  # before numpy allocates the values
                raise _err(path, field, f"{kind} of {args[2]} values; at most {MAX_CELLS} cells in a study")
            if not all(math.isfinite(a) for a in args[:2]):
                raise _err(path, field, f"{kind} takes finite start and stop, got {args[:2]}")
            values = _spaced(path, field, kind, args)
        elif isinstance(spec, list) and spec:
            if key == "network.hidden":
                if not all(isinstance(v, list) and v and all(isinstance(w, int) and not isinstance(w, bool) for w in v)
                           for v in spec):
                    raise _err(path, field, "values must be lists of widths, e.g. [[8], [8, 8]]")
                for width in (w for v in spec for w in v if w < 1):  # ("-".join: a sign would not read back)
                    raise _err(path, field, f"width {width} is out of range; allowed: 1 <= width")
                values = tuple("-".join(map(str, v)) for v in spec)
            else:
                for k, v in enumerate(spec):
                    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                        raise _err(path, field, f"values must be numbers or strings, got {_short(v)} (value {k + 1} "
                                                f"of {len(spec)})")
                values = tuple(spec)
        else:
            raise _err(path, field, "expected a non-empty array of values, or {linspace = ...} / {logspace = ...}")
        values = _typed_values(path, field, key, values)
        if len(set(values)) != len(values):
            raise _err(path, field, f"repeated values in {list(values)}")
        if key == "dataset.name" and len(set(map(dataset_key, values))) != len(values):
            raise _err(path, field, f"repeated values in {list(values)}: the names of the built-in datasets "
                                    "are read in any case and without surrounding spaces")
        axes.append(Axis(key=key, dim="", values=values, units=CONFIG_UNITS.get(key, "1"),
                         long_name=KEY_NAMES.get(key, "")))
    # dimension names: the last part of the key (DIM_NAMES for a model's or dataset's name) where
    # unique, else the key with dots as '__'
    last = [DIM_NAMES.get(a.key, a.key.rsplit(".", 1)[1]) for a in axes]
    named = []
    for axis, short in zip(axes, last):
        dim = short if last.count(short) == 1 and short not in ("network", "epoch") else axis.key.replace(".", "__")
        named.append(dataclasses.replace(axis, dim=dim))
    return tuple(named)


def _spaced(path, field, kind, args):
    """The values of {linspace|logspace = [start, stop, num]}, all finite (numpy's overflow
    warning silenced: the one-line error says it), each rounded to 15 significant digits so that
    the decimal a user types selects it: numpy's logspace(-6, -4, 3) gives 9.999999999999999e-06
    for 10^-5 and linspace(0, 0.3, 4) 0.09999999999999999 for 0.1; rounded, they are 1e-05 and 0.1
    (every 15-digit decimal has a float64 of its own; values that round to the same one are then
    refused as repeated; a value within 5e-15 of the largest float, which would round past it, is
    kept as it is)."""
    with np.errstate(all="ignore"):
        values = getattr(np, kind)(args[0], args[1], args[2])
    if not np.all(np.isfinite(values)):
        problem = (f"10**{max(args[:2])} is beyond the largest float (about 1.8e308); allowed: exponents up to 308"
                   if kind == "logspace" else "stop - start is beyond the largest float (about 1.8e308)")
        raise _err(path, field, f"{kind} = {list(args)} overflows: {problem}")
    rounded = (float(f"{v:.15g}") for v in values)
    return tuple(r if math.isfinite(r) else float(v) for r, v in zip(rounded, values))


def _typed_values(path, field, key, values):
    """The sweep's values checked against the key's type in SCHEMA: integers for an integer key
    (whole numbers such as 2.0 become 2), numbers for a numeric key, strings for a string key.
    Model parameters (numbers, or words for a model's options) are left to the model."""
    if key == "network.hidden" or key.startswith("model.params."):
        return values
    section, name = key.rsplit(".", 1)
    kind = SCHEMA[section][name]
    if kind is int:
        bad = [v for v in values if not (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))]
        if bad:
            raise _err(path, field, f"expected integers (whole numbers), got {bad[0]!r}")
        return tuple(int(v) for v in values)
    if kind == _NUM:
        bad = [v for v in values if not isinstance(v, (int, float))]
        if bad:
            raise _err(path, field, f"expected numbers, got {bad[0]!r}")
        return values
    if kind is str:
        bad = [v for v in values if not isinstance(v, str)]
        if bad:
            raise _err(path, field, f"expected strings, got {bad[0]!r}")
        return values
    raise AssertionError(f"{key}: SWEEPABLE holds a key of type {kind}")


def build_cell(path, data, models=None, model_names=()):
    """TrainConfig, device model, dataset and teacher arguments from a study's tables; the model
    from ``models`` ({name: model}) where it has the name, else from :func:`get_model`. Where the
    study's cells use several models (``model_names``), each takes the model settings it has:
    the parameters of ``model.params`` that are its own, and ``model.iv_csv`` if it is tabulated
    (and ``variability.per_parameter`` and ``correlation`` of its parameters; the study refuses a
    setting none of them takes, :func:`_check_model_settings_used`)."""
    from ..devices import Readout, Variability, get_model
    from ..training import Distillation, PairNeuron, Schedule, TrainConfig

    def section(name, build):
        try:
            return build(dict(data.get(name, {})))
        except ConfigError as err:  # the library's field names ("distillation.alpha") as the study's keys
            field = err.field.removeprefix(f"{name}.")
            raise ConfigError(f"{name}.{field}", err.problem) from None
        except TypeError as err:  # a value of a type the dataclass cannot take
            raise ConfigError(name, str(err)) from None

    model_table = data.get("model", {})
    several = len(set(model_names)) > 1  # models: each cell takes the settings of its own
    try:
        name = model_table.get("name", "stt_compact")
        params, iv_csv = model_table.get("params", {}), model_table.get("iv_csv")
        if several and name != "tabulated":
            iv_csv = None
        model = models[name] if models and name in models else get_model(name, iv_csv=iv_csv)
        if several:
            params = {k: v for k, v in params.items() if k in model.parameter_names}
        model = model.with_nominal(**params) if params else model
    except ConfigError as err:
        field = {"model": "model.name", "iv-csv": "model.iv_csv", "param": "model.params"}.get(err.field)
        if field is None:
            field = err.field.replace("param ", "model.params.") if err.field.startswith("param ") else f"model.{err.field}"
        raise ConfigError(field, err.problem) from None

    def variability(t):
        corr = t.pop("correlation", {})
        pairs = {}
        for k, rho in corr.items():
            names = tuple(n.strip() for n in k.split(","))
            if len(names) != 2:
                raise ConfigError("correlation", f"key {k!r} must be 'NAME_A,NAME_B'")
            pairs[names] = rho
        per = {}
        for k, v in t.pop("per_parameter", {}).items():
            if not isinstance(v, list):
                raise ConfigError(f"per_parameter.{k}", f"expected three spreads (chip, d2d, pair), e.g. "
                                                        f"[0.0, 0.05, 0.01], got {v!r}")
            per[k] = tuple(v)
        if several:
            own = set(model.parameter_names)
            per = {k: v for k, v in per.items() if k in own}
            pairs = {k: v for k, v in pairs.items() if set(k) <= own}
        var = Variability(per_parameter=per, correlation=pairs, **t)
        var.level_sigmas(model)
        var.cholesky(model)
        return var

    def readout(t):
        for k in ("adc_range", "dac_range"):
            if k in t:
                t[k] = tuple(t[k])
        return Readout(**t)

    def training(t):
        t["lr_schedule"] = Schedule.parse(t.get("lr_schedule", "constant"))
        return t

    var = section("variability", variability)
    ro = section("readout", readout)
    neuron = section("neuron", lambda t: PairNeuron(**t))
    train_kw = section("training", training)
    hidden = data.get("network", {}).get("hidden", [8])
    dist_table = dict(data.get("distillation", {}))
    teacher_table = dist_table.pop("teacher", None)
    dist = section("distillation", lambda t: Distillation(**dist_table)) if "distillation" in data else None
    try:
        config = TrainConfig(hidden=tuple(hidden), neuron=neuron, variability=var, readout=ro, distillation=dist,
                             seed=data.get("seed", 0), **train_kw)
    except ConfigError as err:
        raise ConfigError(("network." if err.field == "hidden" else "training.") + err.field, err.problem) from None
    teacher = None
    if dist is not None:
        t = dict(teacher_table or {})
        t.setdefault("grad_mode", "tanh")
        t.setdefault("hidden", [64])
        try:
            teacher = TrainConfig(hidden=tuple(t.pop("hidden")), seed=data.get("seed", 0), **t)
        except ConfigError as err:
            raise ConfigError(f"distillation.teacher.{err.field}", err.problem) from None
        if teacher.grad_mode not in ("tanh", "relu", "sigmoid"):
            raise ConfigError("distillation.teacher.grad_mode", f"{teacher.grad_mode!r}; allowed: tanh, relu, sigmoid")
    dataset = dict(data["dataset"])
    return Cell(config=config, model=model, dataset=dataset, teacher=teacher)


def same_training(study):
    """For every cell, the first cell that trains the same networks to the same numbers (itself
    if none): cells that differ only in settings that act in neither, e.g. delta_i between two
    cells of the ``model`` gradient, or the spreads between two ``tanh`` baseline cells
    (:func:`spingpu.training.config.effective_config`). Cells of different device models are
    never merged."""
    first, out = {}, []
    for flat in range(study.n_cells):
        cell = study.cell(flat)
        # the swept model values (the [model] table is the same in every cell), for digital cells too:
        # on a GPU the model's parameter count decides their engine (fused float64 or batched float32)
        model = {k: v for k, v in study.cell_values(flat).items() if k.startswith("model.")}
        key = json.dumps([effective_config(cell.config).as_dict(), model, cell.dataset,
                          cell.teacher.as_dict() if cell.teacher is not None else None], sort_keys=True, default=str)
        out.append(first.setdefault(key, flat))
    return out


def _check_not_fixed_and_swept(study, path):
    """Warn of a key both set in its table and swept: every cell takes the sweep's values, so the
    fixed one is used nowhere though the study's text shows it. A warning, where
    :func:`_check_settings_used` refuses a setting no cell needs: study files write the value a
    swept key takes when it is not swept. That value must still be valid (it is in the study's
    text and digest): the first cell with it in place of the swept one must build, and a
    ``dataset.name`` (required in its table, swept or not) must name a dataset."""
    from ..datasets import check_dataset_name
    from ..devices import available_models
    from ..errors import UnusedSettingWarning, check_choice

    for axis in study.axes:
        *tables, name = axis.key.split(".")
        table = study.data
        for part in tables:
            table = table.get(part, {}) if isinstance(table, dict) else {}
        if not isinstance(table, dict) or name not in table:
            continue
        replaced = f" (set in its table, where sweep.{axis.key} replaces it in every cell)"
        try:
            if axis.key == "dataset.name":
                check_dataset_name(table[name])
            elif axis.key == "model.name":
                check_choice("model.name", table[name], available_models())
            else:  # the value in the first cell; what only a combination refuses (a model's parameters) is not its fault
                study.cell(0, unswept={axis.key})
        except ConfigError as err:
            field = "dataset.name" if err.field == "dataset" else err.field
            if field == axis.key:
                raise _err(path, field, err.problem + replaced) from None
        if axis.key != "dataset.name":
            warnings.warn(f"{axis.key}: set to {table[name]!r} and swept (sweep.{axis.key}): the sweep's values "
                          "replace it in every cell", UnusedSettingWarning, stacklevel=3)


def _check_settings_used(study, configs, path):
    """Refuse a setting, given or swept, that no cell uses (as the command line refuses an option
    that would do nothing): a cell that needs it, e.g. a gaussian-noise cell for read_noise, uses it.
    What counts is the keys the file writes, whatever their values: a setting written at its
    default is refused too, as the command line refuses ``--adc-range -1 1`` without
    ``--adc-bits``. The message names what the cells lack."""
    swept = {a.key for a in study.axes}
    for key in CONDITIONAL_SETTINGS:
        section, name = key.split(".")
        if key not in swept and name not in study.data.get(section, {}):
            continue
        unmet = [unmet_needs(c, key) for c in configs]
        if all(unmet):
            lacking = [need for need in CONDITIONAL_SETTINGS[key] if any(need in u for u in unmet)]
            raise _err(path, key, f"has no effect in any cell: it needs {needs_text(lacking)}; remove it")
    model_given = any(k.startswith("model.") for k in swept) or "model" in study.data
    if model_given and not any(c.is_mtj for c in configs):
        raise _err(path, "model", f"has no effect in any cell: it needs {needs_text(['mtj'])}; remove it")


CELLS_TRIED = 256  # other cells built to see whether a cell's error is every cell's


FIELD_KEYS = {"param": "model.params."}  # the swept keys an error's field names, where not its section's


def _cell_of_error(study, flat, err):
    """`` (in the cell KEY=VALUE, ...)`` for the error ``err`` of cell ``flat``, where it is that
    cell's: where another cell builds without it (up to CELLS_TRIED tried, the last first); ""
    where every cell tried has it (a setting no sweep touches: naming a cell would mislead). The
    cell is named by the swept keys of the error's section (``model.name=x`` for a model's error,
    not the cell's delta_i too), or by all where none is swept."""
    field = str(err.field)
    prefix = next((keys for start, keys in FIELD_KEYS.items() if field.startswith(start)), field.split(".")[0] + ".")
    cell = study.cell_text(flat, prefix=prefix) or study.cell_text(flat)
    if not cell:
        return ""
    others = [c for c in (study.n_cells - 1, *range(study.n_cells)) if c != flat][:CELLS_TRIED]
    for other in others:
        try:
            study.cell(other).config
        except ConfigError as other_err:
            if str(other_err) == str(err):
                continue
        return f" (in the cell {cell})"
    return ""


def _check_model_settings_used(study, path):
    """Where the cells use several device models (build_cell gives each the settings it takes):
    refuse a model parameter, given or swept, or a per_parameter spread that none of them has, a
    correlation of two parameters that no model has both of, and a measured curve where none is
    tabulated."""
    names = sorted(set(study.model_names))
    if len(names) < 2:
        return  # one model: every setting is its own, checked as it is built
    given = {f"model.params.{k}" for k in study.data.get("model", {}).get("params", {})}
    given |= {a.key for a in study.axes if a.key.startswith("model.params.") or a.key == "model.iv_csv"}
    given |= {"model.iv_csv"} if "iv_csv" in study.data.get("model", {}) else set()
    if "model.iv_csv" in given and "tabulated" not in names:
        raise _err(path, "model.iv_csv", f"a measured curve is only used by the 'tabulated' model, and no cell "
                                         f"uses it (model.name: {', '.join(map(repr, names))}); remove it")
    has = {}
    for flat in range(study.n_cells):
        model = study.cell(flat).model
        has.setdefault(model.name, set(model.parameter_names))
        if len(has) == len(names):
            break
    variability = study.data.get("variability", {})
    given |= {f"variability.per_parameter.{k}" for k in variability.get("per_parameter", {})}
    allowed = "; ".join(f"{n}: {', '.join(sorted(has[n]))}" for n in sorted(has))
    for key in sorted(given - {"model.iv_csv"}):
        param = key.rsplit(".", 1)[1]
        if not any(param in p for p in has.values()):
            hint = did_you_mean(param, sorted(set().union(*has.values())))
            raise _err(path, key, f"not a parameter of any model the cells use{hint}; allowed: {allowed}")
    for pair in variability.get("correlation", {}):
        both = {n.strip() for n in pair.split(",")}
        if not any(both <= p for p in has.values()):
            raise _err(path, f"variability.correlation.{pair}", f"no model the cells use has both parameters; "
                                                               f"allowed: {allowed}")


def _check_dataset(study, path):
    """Every cell's dataset is known and its files exist (each distinct one is loaded once), and
    its data_dir and test_fraction are read by some cell."""

    first = {}  # each distinct dataset table -> the first cell that has it
    for flat in range(study.n_cells):
        first.setdefault(json.dumps(study.cell(flat).dataset, sort_keys=True), flat)
    _check_dataset_keys_read(path, [json.loads(key) for key in first])
    for key, flat in first.items():
        try:
            load_cell_dataset(json.loads(key), study.seed)
        except ConfigError as err:
            cell = study.cell_text(flat, prefix="dataset.")
            raise _err(path, f"dataset.{err.field}" if err.field != "dataset" else "dataset.name",
                       err.problem + (f" (in the cell {cell})" if cell else "")) from None


def load_cell_dataset(table, seed):
    """The :class:`~spingpu.Dataset` of a cell's ``dataset`` table (:attr:`Cell.dataset`):
    :func:`~spingpu.load_dataset` of its keys, split with its ``split_seed`` where it gives one,
    else with the study's ``seed`` (which also draws the junctions, weights, batches and noise)."""
    kw = dict(table)
    name = kw.pop("name")
    try:
        return load_dataset(name, seed=kw.pop("split_seed", seed), **kw)
    except ConfigError as err:
        if err.field == "seed" and "split_seed" in table:
            raise ConfigError("split_seed", err.problem) from None
        raise


def _check_dataset_keys_read(path, tables):
    """Refuse a data_dir that no cell reads: only mnist reads one (load_dataset ignores it); and
    a test_fraction (whatever its value) where every cell is mnist, whose test split is the
    official 10,000 images."""
    mnist = [t["name"].strip().lower() == "mnist" for t in tables]
    names = ", ".join(sorted({repr(t["name"]) for t in tables}))
    if any(t.get("data_dir") for t in tables) and not any(mnist):
        raise _err(path, "dataset.data_dir", f"only mnist reads data_dir, and this study trains on {names}; "
                                             "remove data_dir")
    if all(mnist) and any("test_fraction" in t for t in tables):
        raise _err(path, "dataset.test_fraction", "mnist's test split is its official 10,000 images, so "
                                                  "test_fraction has no effect; remove it")

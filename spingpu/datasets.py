"""Classification datasets, split and standardised, ready for training.

Every loader returns a :class:`Dataset`: float32 features of shape ``(rows, features)`` and int64
labels ``0 .. n_classes - 1`` for a training, a validation and a test split.

Conventions (all datasets):

- **Splits** are seeded and stratified: every class keeps its share of rows in each split, to
  within one row in the test split (drawn first) and within two in the validation split (drawn
  from the rest, whose shares the test split's rounding moved) and the training split (the rows
  left over). ``val_fraction`` and ``test_fraction`` are fractions of the *whole* table: the
  test split has ``test_fraction * n`` rows and the validation split ``val_fraction * n`` rows,
  each rounded to the nearest row, halves up, exactly as the fraction is written (0.41 of 150 rows
  is 61.5: 62 rows); the training split has the rest. The test split is drawn first with
  ``sklearn.model_selection.train_test_split(..., stratify=y, random_state=seed)``, then the
  validation split from what remains, with the same seed (taken modulo 2**32, scikit-learn's
  range, so that every training seed, 0 .. 2**64 - 1, is a split seed). The same seed gives the
  same splits.
- **Standardisation** (z-score) is fitted on the training split only and applied to all three:
  ``x' = (x - feature_mean) / feature_std``, with the population standard deviation (ddof = 0)
  computed in float64; a feature that is constant on the training split gets ``feature_std = 1``
  (it becomes ``x - mean``, i.e. 0 on the training split). The statistics are kept on the dataset,
  in the units of the raw features (for MNIST, pixel values 0..255).
- ``max_train`` (optional) keeps a seeded, stratified subset of that many rows of the training split
  (after the validation and test rows have been removed), for quick runs; the standardisation is
  fitted on the rows kept.

Datasets (``load_dataset(name)``):

- ``iris`` (150 rows, 4 features, 3 classes) and ``digits`` (1797 rows, 8x8 = 64 pixel features of
  0..16, 10 classes), shipped with scikit-learn (nothing is downloaded).
- ``mnist``: the user's own copy, from a folder (``data_dir``, else the environment variable
  ``SPINGPU_DATA``) holding the four IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each
  optionally gzipped, ``.gz``), or an ``mnist.npz`` with arrays ``x_train, y_train, x_test,
  y_test``. The IDX files are preferred when both are present. The test split is the official
  10,000-image test set, so **test_fraction is ignored for mnist** (it must still lie in (0, 1),
  as for the other datasets); the validation split is a seeded stratified ``val_fraction`` of the
  official 60,000 training images. Images are flattened row by row to 784 features and
  standardised with one mean and one standard deviation pooled over all pixels of the training
  split (per-pixel statistics would blow up pixels that are almost never lit: such a pixel, lit in
  a test image, would reach thousands of standard deviations). The statistics are in the images'
  units: pixel values 0..255 for uint8 images (about 33.3 and 78.6), [0, 1] for float images in an
  npz (both sets are taken in [0, 1] where one is uint8 and the other float).
- ``csv:PATH``: a comma-separated table of numeric feature columns and a label column (the column
  named ``label`` if the first row is a header that has one, else the last column). The first row
  is a header if a cell is ``label``, if no cell is a number, or if its cells are exactly the
  column numbers ``0, 1, ..., C-1`` of three columns or more (what pandas' ``to_csv(index=False)``
  writes for unnamed columns; a first row ``0,1`` is data). Blank lines are skipped; there are no
  comment lines (a line starting with ``#`` is data). Labels may be integers or strings; they are mapped to ``0 .. K-1`` in sorted order
  (numeric order for integers) and the original values are kept in ``Dataset.class_names``. A
  missing label (an empty cell, or NaN in any case) is refused.

``from_arrays(x, y)`` does the same splitting and standardisation for arrays from Python (a label
that is None, NaN or pandas' NA, or the text NaN, is refused as missing);
``from_splits(x_train, y_train, x_val, y_val, x_test, y_test)`` takes splits made by the user as
they are and standardises them (no scikit-learn needed).

Bad input raises :class:`spingpu.errors.ConfigError` naming the field (``dataset``, ``data_dir``,
``mnist``, ``x``, ``y``, ``seed``, ``val_fraction``, ...).

Only NumPy is imported at module level; scikit-learn is imported when a split is made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .errors import ConfigError, _short, check_range, did_you_mean

DATASETS = ("iris", "digits", "mnist")
"""Names ``load_dataset`` accepts, besides ``"csv:PATH"``."""

MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
"""The four standard MNIST IDX file names (each may also be present gzipped, with ``.gz``)."""

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, columns)
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)
_CHUNK_ROWS = 8192


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A classification dataset split into training, validation and test sets.

    ``x_*`` are float32 arrays ``(rows, n_features)``, standardised with the training split's
    statistics: ``x = (raw - feature_mean) / feature_std``, ``raw`` in the source's own units
    (MNIST: pixel values 0..255 for uint8 images). ``y_*`` are int64 arrays ``(rows,)`` with labels
    ``0 .. n_classes - 1``. ``feature_mean`` and ``feature_std`` (float64, ``(n_features,)``, in
    the raw units) were fitted on the training split (population std, ddof = 0; constant features
    get std 1.0); apply them to new raw data with :meth:`standardise`. ``class_names``
    gives the original label of each class index. ``split`` records how the splits were made (the
    arguments of :func:`load_dataset` or :func:`from_arrays` that choose them; ``{"given": True}``
    for :func:`from_splits`): :func:`spingpu.train` writes it in the results' ``dataset_split``,
    and :attr:`sha256` of the arrays in ``dataset_sha256``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    feature_mean: np.ndarray
    feature_std: np.ndarray
    class_names: tuple = ()
    split: dict = dataclasses.field(default_factory=dict)  # how the splits were made, e.g. {"seed": 0, ...}

    def __post_init__(self):
        """ConfigError naming the field (``dataset.y_train``, ...) where the arrays break the
        conventions above: the engines index their arrays by these labels and sizes unchecked."""
        n_classes = check_range("dataset.n_classes", self.n_classes, 2, integer=True)
        n_features = None
        for part in ("train", "val", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype.kind != "f" or 0 in x.shape:
                raise ConfigError(f"dataset.x_{part}", f"expected a float array (rows >= 1, features >= 1), got "
                                                       f"{_array_text(x)}")
            if n_features is not None and x.shape[1] != n_features:
                raise ConfigError(f"dataset.x_{part}", f"has {x.shape[1]} features and x_train {n_features}")
            n_features = x.shape[1]
            if not np.isfinite(x).all():
                row, col = np.argwhere(~np.isfinite(x))[0]
                raise ConfigError(f"dataset.x_{part}", f"expected finite values, found {x[row, col]} at row {row}, "
                                                       f"column {col}")
            if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype.kind not in "iu" or y.size != x.shape[0]:
                raise ConfigError(f"dataset.y_{part}", f"expected {x.shape[0]} integer labels (one per row of "
                                                       f"x_{part}), got {_array_text(y)}")
            outside = (y < 0) | (y >= n_classes)
            if outside.any():
                row = int(np.argmax(outside))
                raise ConfigError(f"dataset.y_{part}", f"label {y[row]} at row {row} is out of range; allowed: "
                                                       f"0 <= label <= {n_classes - 1} (n_classes {n_classes})")
        for field in ("feature_mean", "feature_std"):
            value = getattr(self, field)
            if not isinstance(value, np.ndarray) or value.shape != (n_features,) or not np.isfinite(value).all():
                raise ConfigError(f"dataset.{field}", f"expected {n_features} finite numbers, got {_array_text(value)}")
        if not (self.feature_std > 0).all():
            raise ConfigError("dataset.feature_std", "expected values > 0 (a constant feature's std is 1.0)")

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return int(self.x_train.shape[1])

    @property
    def sha256(self) -> str:
        """sha256 of what the engines read: for each split, x's dtype, shape and bytes (C order),
        then y's as int64, then ``n_classes``. Two datasets with this digest train every network to
        the same numbers; :func:`spingpu.train` writes it in the results' ``dataset_sha256``."""
        digest = hashlib.sha256()
        for part in ("train", "val", "test"):
            for array in (getattr(self, f"x_{part}"), getattr(self, f"y_{part}").astype(np.int64, copy=False)):
                digest.update(f"{array.dtype.str}{array.shape};".encode())
                digest.update(np.ascontiguousarray(array).data)
        digest.update(f"n_classes={self.n_classes}".encode())
        return digest.hexdigest()

    def standardise(self, x_raw) -> np.ndarray:
        """Standardise raw features (the source's units: pixel values 0..255 for MNIST's uint8
        images) with the training statistics: (x_raw - feature_mean) / feature_std, float32, for
        rows of ``n_features`` numbers."""
        try:
            x_raw = np.asarray(x_raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError("x_raw", f"expected numbers, got {type(x_raw).__name__}") from None
        if x_raw.ndim == 0 or x_raw.shape[-1] != self.n_features:
            raise ConfigError("x_raw", f"expected rows of {self.n_features} features, got shape {x_raw.shape}")
        return ((x_raw - self.feature_mean) / self.feature_std).astype(np.float32)

    def __repr__(self):
        return (f"Dataset({self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
                f"test={len(self.y_test)}, n_features={self.n_features}, n_classes={self.n_classes})")


# ----------------------------------------------------------------------------------------------
# public entry points


def load_dataset(name, *, seed=0, val_fraction=0.2, test_fraction=0.2, data_dir=None,
                 max_train=None) -> Dataset:
    """Load a dataset by name, split (seeded, stratified) and standardised (training statistics).

    ``name``: ``"iris"``, ``"digits"``, ``"mnist"`` or ``"csv:PATH"``. ``seed`` (integer >= 0)
    fixes the splits. ``val_fraction``, ``test_fraction``: fractions of the whole table, each in
    (0, 1) with a sum below 1; for ``mnist`` the test set is the official one and
    ``test_fraction`` is ignored (but must lie in (0, 1)), ``val_fraction`` is a fraction of the
    official training set.
    ``data_dir``: the MNIST folder (default: environment variable ``SPINGPU_DATA``). ``max_train``:
    keep at most this many training rows (seeded stratified subset of the training split).
    See the module docstring for the conventions.
    """
    check_dataset_name(name)
    key = name.strip()
    seed = _check_seed(seed)
    max_train = _check_max_train(max_train)
    if key.lower() == "mnist":
        val_fraction = check_range("val_fraction", val_fraction, 0.0, 1.0, low_open=True,
                                   high_open=True)
        # unused (the official test set), but checked as for every dataset: a study may give
        # cells of several datasets one test_fraction
        check_range("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
        return _load_mnist(data_dir, seed=seed, val_fraction=val_fraction, max_train=max_train)
    val_fraction, test_fraction = _check_fractions(val_fraction, test_fraction)
    if key.lower() in ("iris", "digits"):
        from sklearn import datasets as skd

        bunch = skd.load_iris() if key.lower() == "iris" else skd.load_digits()
        x = np.asarray(bunch.data, dtype=np.float64)
        y = np.asarray(bunch.target, dtype=np.int64)
        names = tuple(str(t) for t in bunch.target_names)
        return _build(key.lower(), x, y, names, seed=seed, val_fraction=val_fraction,
                      test_fraction=test_fraction, max_train=max_train, field="dataset")
    path = csv_path(key)
    if path is not None:
        csv_file = os.path.expanduser(path)
        x, y, names, label_note = _read_csv(csv_file)
        try:
            return _build(f"csv:{path}", x, y, names, seed=seed, val_fraction=val_fraction,
                          test_fraction=test_fraction, max_train=max_train, field="dataset")
        except ConfigError as err:  # the classes do not fit the splits: name the file, and the labels' column
            if err.field != "dataset":
                raise
            raise ConfigError("dataset", f"CSV file {csv_file!r}: {err.problem}"
                                         + (f"; {label_note}" if label_note else "")) from None
    raise AssertionError(name)  # check_dataset_name refused it


def check_dataset_name(name):
    """ConfigError (field ``dataset``) unless ``name`` is one :func:`load_dataset` takes: a
    built-in dataset (any case, spaces around it ignored) or ``csv:PATH`` (the file not read)."""
    if not isinstance(name, str):
        raise ConfigError("dataset", f"expected a name, got {name!r}; allowed: {_allowed()}")
    key = name.strip()
    path = csv_path(key)
    if path is not None and not path:
        raise ConfigError("dataset", "csv: needs a file path, as in csv:PATH")
    if path is None and key.lower() not in DATASETS:
        raise ConfigError("dataset", f"unknown dataset {name!r}{did_you_mean(key.lower(), DATASETS)}; "
                                     f"allowed: {_allowed()}")


def from_arrays(x, y, *, name="arrays", seed=0, val_fraction=0.2, test_fraction=0.2) -> Dataset:
    """A :class:`Dataset` from NumPy arrays: ``x`` (rows, features), ``y`` (rows,) class labels.

    Labels may be integers, whole-number floats or strings; they are mapped to ``0 .. K-1`` in
    sorted order (originals in ``class_names``). Splits and standardisation as in
    :func:`load_dataset`. Raises ConfigError (field ``x`` or ``y``) for wrong shapes, non-finite or
    non-numeric features, fewer than 2 classes or a class too small to stratify.
    """
    seed = _check_seed(seed)
    val_fraction, test_fraction = _check_fractions(val_fraction, test_fraction)
    xa, ya = _check_table(x, y, "x", "y")
    codes, names = _encode_labels(ya, "y")
    return _build(str(name), xa, codes, names, seed=seed, val_fraction=val_fraction,
                  test_fraction=test_fraction, max_train=None, field="y")


def from_splits(x_train, y_train, x_val, y_val, x_test, y_test, *, name="arrays") -> Dataset:
    """A :class:`Dataset` from splits the user made: features (rows, features) and labels (rows,)
    of the training, validation and test sets, used as given (no shuffling, no stratification).

    Labels are mapped to ``0 .. K-1`` in sorted order over all three splits (originals in
    ``class_names``); the standardisation is fitted on ``x_train`` as in :func:`load_dataset`.
    Raises ConfigError naming the argument (``x_val``, ``y_test``, ...) for wrong shapes, non-finite
    or non-numeric features, a split without rows, feature counts that differ from ``x_train``'s,
    labels that are numbers in one split and strings in another, fewer than 2 classes in
    ``y_train``, or a validation or test class that ``y_train`` lacks.
    """
    splits = [_check_table(x, y, f"x_{part}", f"y_{part}")
              for part, x, y in (("train", x_train, y_train), ("val", x_val, y_val), ("test", x_test, y_test))]
    for part, (xa, _) in zip(("val", "test"), splits[1:]):
        if xa.shape[1] != splits[0][0].shape[1]:
            raise ConfigError(f"x_{part}", f"has {xa.shape[1]} features and x_train {splits[0][0].shape[1]}; "
                                           "the splits must have the same features")
    labels = [_normalise_labels(ya, f"y_{part}") for part, (_, ya) in zip(("train", "val", "test"), splits)]
    for part, ya in zip(("val", "test"), labels[1:]):
        if (ya.dtype.kind in "biu") != (labels[0].dtype.kind in "biu"):
            raise ConfigError(f"y_{part}", f"labels are {'numbers' if ya.dtype.kind in 'biu' else 'strings'} and "
                                           f"y_train's are not; the splits must label the classes alike")
    classes, codes = np.unique(np.concatenate(labels), return_inverse=True)
    names = tuple(str(c) for c in classes)
    ends = np.cumsum([len(ya) for ya in labels])
    c_tr, c_va, c_te = np.split(codes.astype(np.int64).reshape(-1), ends[:-1])
    trained = np.unique(c_tr)
    if trained.size < 2:
        raise ConfigError("y_train", f"need at least 2 classes, found {trained.size}")
    for part, c in (("val", c_va), ("test", c_te)):
        unseen = np.setdiff1d(c, trained)
        if unseen.size:
            raise ConfigError(f"y_{part}", f"class {names[unseen[0]]!r} is not in y_train; a network cannot "
                                           "learn a class it never trains on")
    (x_tr, _), (x_va, _), (x_te, _) = splits
    return _finish(str(name), x_tr, c_tr, x_va, c_va, x_te, c_te, len(names), names, split={"given": True})


# ----------------------------------------------------------------------------------------------
# validation helpers


def _allowed():
    return ", ".join(DATASETS) + ", csv:PATH"


def _check_table(x, y, field_x, field_y):
    """(float64 features, labels) of one table after the checks of :func:`from_arrays`."""
    try:
        xa = np.asarray(x)
    except (TypeError, ValueError) as err:  # ragged lists
        raise ConfigError(field_x, f"expected a 2-D numeric array (rows, features): {_one_line(err)}") from None
    if xa.ndim != 2:
        raise ConfigError(field_x, f"expected a 2-D array (rows, features), got shape {xa.shape}")
    if xa.dtype.kind not in "biuf":
        raise ConfigError(field_x, f"expected real numbers, got dtype {xa.dtype}")
    xa = xa.astype(np.float64)
    if xa.shape[0] == 0 or xa.shape[1] == 0:
        raise ConfigError(field_x, f"expected at least one row and one feature, got shape {xa.shape}")
    if not np.all(np.isfinite(xa)):
        bad = np.argwhere(~np.isfinite(xa))[0]
        raise ConfigError(field_x, f"expected finite values, found {xa[bad[0], bad[1]]} at row {bad[0]}, "
                                   f"column {bad[1]}")
    ya = np.asarray(y)
    if ya.ndim != 1:
        raise ConfigError(field_y, f"expected a 1-D array of labels, got shape {ya.shape}")
    if len(ya) != len(xa):
        raise ConfigError(field_y, f"has {len(ya)} labels but {field_x} has {len(xa)} rows")
    return xa, ya


def _array_text(value):
    """How a value that should be an array is described in an error: its type, shape and dtype."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"{type(value).__name__}"


def _one_line(err):
    return " ".join(str(err).split())


def dataset_key(name):
    """The dataset ``name`` loads, as one string: a built-in name in lower case, ``csv:PATH``
    with the path as :func:`csv_path` reads it, any other name stripped."""
    path = csv_path(name)
    if path is not None:
        return f"csv:{path}"
    name = name.strip()
    return name.lower() if name.lower() in DATASETS else name


def csv_path(name):
    """The PATH of a dataset name ``csv:PATH`` as load_dataset reads it (any case, spaces
    around), "" for ``csv:`` without one, None for a name that is not ``csv:``."""
    if isinstance(name, str) and name.strip()[:4].lower() == "csv:":
        return name.strip()[4:].strip()
    return None


def _check_seed(seed):
    """The split seed: any training seed (0 .. 2**64 - 1), taken modulo 2**32 (scikit-learn's range)."""
    return check_range("seed", seed, 0, 2**64 - 1, integer=True) % 2**32


def _check_max_train(max_train):
    if max_train is None:
        return None
    return check_range("max_train", max_train, 1, integer=True)


def _check_fractions(val_fraction, test_fraction):
    val = check_range("val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
    test = check_range("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    if val + test >= 1.0:
        raise ConfigError(_larger_fraction(val, test), f"val_fraction + test_fraction = {val + test:g} leaves no "
                                                       "training rows; allowed: a sum below 1")
    return val, test


def _normalise_labels(labels, field):
    """Labels as integers (whole-number floats, and object arrays of numbers, included) or strings;
    ConfigError naming ``field`` otherwise."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "fOU":
        missing = (np.isnan(labels) if labels.dtype.kind == "f"
                   else np.fromiter(map(_is_missing_label, labels.reshape(-1)), bool, labels.size))
        if missing.any():
            row = int(np.argmax(missing))
            value = labels.reshape(-1)[row]
            raise ConfigError(field, f"the label at row {row} is missing: "
                                     f"{value.item() if isinstance(value, np.generic) else value!r}; every row "
                                     f"needs a class label ({_MISSING_RULE})")
    if labels.dtype.kind == "O":  # e.g. from pandas: numbers stay numbers, anything else is text
        as_list = np.asarray(labels.tolist())
        labels = as_list if as_list.dtype.kind in "biufUS" else labels.astype(str)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)):
            raise ConfigError(field, "labels must be finite")
        if not np.all(labels == np.round(labels)):
            raise ConfigError(field, "float labels must be whole numbers (class labels, not a "
                                     "regression target)")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "biuUS":
        raise ConfigError(field, f"expected integer or string labels, got dtype {labels.dtype}")
    return labels


_MISSING_TEXTS = ("nan", "+nan", "-nan")  # how NumPy and pandas write a float NaN as text
_MISSING_RULE = ("missing: None, NaN, pandas' NA, and the text NaN in any case; NA, None and null are class names "
                 "like any other")


def _is_missing_label(value):
    """Whether a label is a missing value: None, a float NaN, pandas' NA, or a text that reads NaN
    (any case, spaces around: a float NaN written as text). NA, None and null are words a class
    may be named ("none of the above"), so they are labels."""
    if value is None or type(value).__name__ == "NAType":
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return isinstance(value, str) and value.strip().lower() in _MISSING_TEXTS


def _encode_labels(labels, field):
    """Map labels to int64 codes 0..K-1 in sorted order; return (codes, class names)."""
    labels = _normalise_labels(labels, field)
    classes, codes = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ConfigError(field, f"need at least 2 classes, found {len(classes)}")
    return codes.astype(np.int64).reshape(-1), tuple(str(c) for c in classes)


def _n_rows(fraction, n):
    """Rows of a split: ``fraction * n`` rounded to the nearest row, halves up, computed exactly
    on the fraction as written (its shortest decimal form: 0.41 of 150 rows is 61.5, so 62)."""
    return math.floor(Fraction(repr(float(fraction))) * n + Fraction(1, 2))


# ----------------------------------------------------------------------------------------------
# splitting and standardisation


def _stratified_holdout(y, n_take, seed, field, what):
    """Indices (kept, taken) of a seeded stratified split of ``len(y)`` rows taking ``n_take``."""
    from sklearn.model_selection import train_test_split

    try:
        kept, taken = train_test_split(np.arange(len(y)), test_size=int(n_take), stratify=y,
                                       random_state=seed, shuffle=True)
    except ValueError as err:
        raise ConfigError(field, f"cannot make a stratified {what} split: {_one_line(err)}") from None
    return kept, taken


def _stratified_subset(y, n_keep, n_classes, seed):
    """Indices of a seeded stratified subset of ``n_keep`` rows (class shares within one row)."""
    counts = np.bincount(y, minlength=n_classes)
    exact = counts * (n_keep / len(y))
    alloc = np.floor(exact).astype(np.int64)
    rng = np.random.default_rng([seed, 0x5EB5E7])
    remainder = exact - alloc
    # largest remainders first; ties broken at random (seeded)
    order = np.lexsort((rng.random(n_classes), -remainder))
    for c in order[: n_keep - int(alloc.sum())]:
        alloc[c] += 1
    picked = []
    for c in range(n_classes):
        members = np.flatnonzero(y == c)
        picked.append(rng.choice(members, size=int(alloc[c]), replace=False))
    keep = np.concatenate(picked)
    return keep[rng.permutation(len(keep))]


def _check_class_sizes(y, n_classes, names, parts, field):
    counts = np.bincount(y, minlength=n_classes)
    need = len(parts)
    for c in range(n_classes):
        if counts[c] < need:
            label = names[c] if c < len(names) else str(c)
            raise ConfigError(field, f"class {label!r} has {counts[c]} row(s); each class needs at "
                                     f"least {need} to be stratified into {' / '.join(parts)} splits")


def _split_sizes(n, n_classes, val_fraction, test_fraction=None):
    """(test rows, validation rows) of ``n`` rows, after checking that every split has at least one
    row per class; else ConfigError naming the fraction that is too small (where the training split
    is: the larger of the two fractions, which take too much). ``test_fraction`` None: no test split
    is taken (MNIST's test set is separate)."""
    n_test = 0 if test_fraction is None else _n_rows(test_fraction, n)
    n_val = _n_rows(val_fraction, n)
    for field, what, fraction, rows in (("test_fraction", "test", test_fraction, n_test),
                                        ("val_fraction", "validation", val_fraction, n_val)):
        if fraction is not None and rows < n_classes:
            raise ConfigError(field, f"{fraction:g} of {n} rows is a {what} split of {rows} row(s), fewer than "
                                     f"the {n_classes} classes; allowed: {field} >= "
                                     f"{_min_fraction(n_classes, n):g} (at least {n_classes} rows)")
    n_train = n - n_test - n_val
    if n_train < n_classes:
        given = (f"val_fraction = {val_fraction:g}" if test_fraction is None
                 else f"val_fraction + test_fraction = {val_fraction + test_fraction:g}")
        raise ConfigError(_larger_fraction(val_fraction, test_fraction),
                          f"{given} of {n} rows leaves a training split of {n_train} row(s), fewer than the "
                          f"{n_classes} classes; allowed: fractions that leave at least {n_classes} training rows")
    return n_test, n_val


def _larger_fraction(val_fraction, test_fraction):
    """The field an error of fractions that take every training row names: the larger of the two
    (``val_fraction`` on a tie, or without a test split), the likelier to have been set too high."""
    return "test_fraction" if test_fraction is not None and test_fraction > val_fraction else "val_fraction"


def _min_fraction(rows, n):
    """The smallest fraction of ``n`` rows that :func:`_n_rows` makes at least ``rows`` rows,
    rounded up to 3 significant digits."""
    exact = (rows - 0.5) / n
    scale = 10.0 ** (2 - math.floor(math.log10(exact)))
    steps = math.ceil(round(exact * scale, 6))
    while _n_rows(steps / scale, n) < rows:  # the rounded fraction itself must give the rows
        steps += 1
    return steps / scale


def _fit_standardiser(x_train, pooled=False):
    """(mean, std) per feature of ``x_train`` in float64, population std (ddof = 0), in the
    features' own units; features constant on the training split get std 1.0. ``pooled``: one
    mean and std over all features (images), repeated per feature. Read chunk by chunk: no
    float64 copy of the whole table."""
    axis = None if pooled else 0
    count = x_train.size if pooled else len(x_train)
    # Features whose squares would overflow or underflow (|x| beyond 1e100 or below 1e-100) are
    # scaled by their largest |x| first; the others by exactly 1, so their numbers are unchanged.
    largest = np.maximum(np.abs(x_train.max(axis=axis).astype(np.float64)),
                         np.abs(x_train.min(axis=axis).astype(np.float64)))
    scale = np.where((largest > 1e100) | ((largest > 0) & (largest < 1e-100)), largest, 1.0)
    mean, var = np.zeros(np.shape(largest)), np.zeros(np.shape(largest))
    for _, chunk in _float_chunks(x_train, scale):
        mean += chunk.sum(axis=axis)
    mean /= count
    for _, chunk in _float_chunks(x_train, scale):
        chunk -= mean
        var += np.square(chunk, out=chunk).sum(axis=axis)
    std = np.sqrt(var / count) * scale
    mean *= scale
    std = np.where(np.ptp(x_train, axis=axis) == 0, 1.0, std)
    n_features = x_train.shape[1]
    return np.broadcast_to(mean, n_features).copy(), np.broadcast_to(std, n_features).copy()


def _apply_standardiser(x, mean, std):
    """float32 ``(x - mean) / std``, computed in float64 chunk by chunk."""
    out = np.empty(x.shape, dtype=np.float32)
    for start, chunk in _float_chunks(x):
        chunk -= mean
        chunk /= std
        out[start:start + len(chunk)] = chunk
    return out


def _float_chunks(x, scale=1.0):
    """(first row, float64 copy of ``_CHUNK_ROWS`` rows of ``x`` divided by ``scale``), in order."""
    for start in range(0, len(x), _CHUNK_ROWS):
        chunk = x[start:start + _CHUNK_ROWS].astype(np.float64)
        chunk /= scale
        yield start, chunk


def _finish(name, x_tr, y_tr, x_va, y_va, x_te, y_te, n_classes, names, pooled=False, split=None):
    """Standardise with the training split's statistics (in the features' own units) and
    assemble the Dataset."""
    mean, std = _fit_standardiser(x_tr, pooled)
    return Dataset(
        name=name,
        x_train=_apply_standardiser(x_tr, mean, std),
        y_train=np.ascontiguousarray(y_tr, dtype=np.int64),
        x_val=_apply_standardiser(x_va, mean, std),
        y_val=np.ascontiguousarray(y_va, dtype=np.int64),
        x_test=_apply_standardiser(x_te, mean, std),
        y_test=np.ascontiguousarray(y_te, dtype=np.int64),
        n_classes=int(n_classes),
        feature_mean=mean,
        feature_std=std,
        class_names=tuple(names),
        split=split or {},
    )


def _limit_train(idx_train, y, max_train, n_classes, seed, field):
    if max_train is None or max_train >= len(idx_train):
        return idx_train
    if max_train < n_classes:
        raise ConfigError("max_train", f"{max_train} is below the number of classes ({n_classes}); "
                                       f"allowed: at least {n_classes}")
    keep = _stratified_subset(y[idx_train], max_train, n_classes, seed)
    return idx_train[keep]


def _build(name, x, y, names, *, seed, val_fraction, test_fraction, max_train, field):
    """Three-way seeded stratified split of a whole table, then standardise."""
    n = len(y)
    n_classes = len(names)
    _check_class_sizes(y, n_classes, names, ("train", "validation", "test"), field)
    n_test, n_val = _split_sizes(n, n_classes, val_fraction, test_fraction)
    rest, idx_test = _stratified_holdout(y, n_test, seed, field, "test")
    kept, taken = _stratified_holdout(y[rest], n_val, seed, field, "validation")
    idx_train, idx_val = rest[kept], rest[taken]
    idx_train = _limit_train(idx_train, y, max_train, n_classes, seed, field)
    return _finish(name, x[idx_train], y[idx_train], x[idx_val], y[idx_val], x[idx_test],
                   y[idx_test], n_classes, names,
                   split=dict(seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, max_train=max_train))


# ----------------------------------------------------------------------------------------------
# CSV


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path):
    """(x float64, codes int64, class names, label note) of a CSV table; ConfigError (field
    ``dataset``) naming the file and the line (physical lines, counted from 1).

    The table: UTF-8 text (a byte-order mark is allowed), columns separated by commas, fields
    optionally quoted (as Python's ``csv`` module and pandas write them; a quoted field may span
    lines), spaces around a field ignored. Blank lines are skipped; there are no comment lines (a
    line starting with ``#`` is read as data like any other). The first row is a header when one of
    its cells is ``label`` (any case), when none of its cells is a number, or when its cells are
    exactly the column numbers ``0, 1, ..., C-1`` of three columns or more (the header pandas'
    ``to_csv(index=False)`` writes for unnamed columns; ``0,1`` is as likely a data row); else it
    is data. The labels are the column named ``label``, else the last column. Features are finite
    numbers. Labels are whole numbers (sorted numerically) or texts; an empty label, or one that
    reads NaN (any case), is a missing value and is refused. The label note is None when a column is named ``label``, else the sentence an
    error about the classes adds: that the last column was taken as the labels.
    """
    import csv

    if os.path.isdir(path):
        raise ConfigError("dataset", f"{path!r} is a folder, expected a CSV file")
    if not os.path.isfile(path):
        raise ConfigError("dataset", f"CSV file {path!r} not found")
    rows = []  # (first physical line, stripped cells) of each line that is not blank
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            line = 1
            try:
                for record in reader:
                    cells = [c.strip() for c in record]
                    if any(cells):
                        rows.append((line, cells))
                    line = reader.line_num + 1
            except csv.Error as err:
                problem = _csv_error(err, csv.field_size_limit(), reader.line_num > line)
                raise ConfigError("dataset", f"CSV file {path!r} line {line}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("dataset", f"cannot read CSV file {path!r}: {_one_line(err)}") from None
    if not rows:
        raise ConfigError("dataset", f"CSV file {path!r} is empty")
    first_line, first = rows[0]
    lowered = [c.lower() for c in first]
    header = ("label" in lowered or not any(_is_number(c) for c in first)
              or (len(first) >= 3 and first == [str(j) for j in range(len(first))]))
    if header:
        columns = first
        rows = rows[1:]
        if lowered.count("label") > 1:
            where = ", ".join(str(j + 1) for j, c in enumerate(lowered) if c == "label")
            raise ConfigError("dataset", f"CSV file {path!r} has {lowered.count('label')} columns named 'label' "
                                         f"(columns {where}); exactly one label column is allowed")
        label_col = lowered.index("label") if "label" in lowered else len(columns) - 1
    else:
        columns = [f"column {j + 1}" for j in range(len(first))]
        label_col = len(first) - 1
    if len(columns) < 2:
        seen = next((name for sep, name in _OTHER_SEPARATORS if sep in first[0]), None)
        if first[0].startswith("#"):
            raise ConfigError("dataset", f"CSV file {path!r} line {first_line} has 1 column: {_short(first[0])}; "
                                         "there are no comment lines (a line starting with # is data); allowed: at "
                                         "least one feature column and a label column, separated by commas")
        if seen:
            raise ConfigError("dataset", f"CSV file {path!r} line {first_line} has 1 column: columns are separated by "
                                         f"commas, and this line has {seen} instead; allowed: at least one feature "
                                         "column and a label column, separated by commas")
        raise ConfigError("dataset", f"CSV file {path!r} needs at least one feature column and a label column, "
                                     f"separated by commas; found 1 column (line {first_line}: {_short(first[0])})")
    if not rows:
        raise ConfigError("dataset", f"CSV file {path!r} has a header but no data rows")
    unnamed_last = not header or columns[-1] == ""  # a header's trailing comma names no column
    features = [j for j in range(len(columns)) if j != label_col]
    x = np.empty((len(rows), len(features)))
    labels = []
    for r, (line, row) in enumerate(rows):
        where = f"CSV file {path!r} line {line}"
        if len(row) != len(columns):
            hint = ""
            if len(row) == len(columns) + 1 and row[-1] == "":
                hint = " (a trailing comma?)"
            elif len(row) == len(columns) - 1 and header and columns[-1] == "":
                hint = " (the header ends with a comma?)"
            raise ConfigError("dataset", f"{where} has {len(row)} fields, expected {len(columns)}{hint}")
        if row[-1] == "" and unnamed_last:
            raise ConfigError("dataset", f"{where}: empty column {len(row)} (a trailing comma?)")
        try:  # the whole row at once (a per-cell loop with NumPy scalars took 2 us a cell)
            values = [float(row[j]) for j in features]
            good = all(map(math.isfinite, values))
        except ValueError:
            good = False
        if not good:  # find the cell, to name it
            for j in features:
                try:
                    value = float(row[j])
                except ValueError:
                    raise ConfigError("dataset", f"{where}: feature {columns[j]!r} is not a number: "
                                                 f"{_short(row[j])}") from None
                if not math.isfinite(value):
                    raise ConfigError("dataset", f"{where}: feature {columns[j]!r} is not finite: {row[j]!r}")
        x[r] = values
        label = row[label_col]
        if label == "":
            raise ConfigError("dataset", f"{where}: empty label")
        if _is_missing_label(label):
            raise ConfigError("dataset", f"{where}: label {label!r} marks a missing value; every row needs a "
                                         f"class label ({_MISSING_RULE})")
        labels.append(label)
    if header and "label" in lowered:
        label_note = None
    elif header:
        label_note = (f"the last column ({columns[label_col]!r}) was taken as the labels because no column is "
                      "named label")
    else:
        label_note = (f"the last column (column {label_col + 1}) was taken as the labels because no column is "
                      "named label (the table has no header)")
    if all(_is_integer_text(s) for s in labels):
        values = [_integer_label(s) for s in labels]
        for (line, _), value, text in zip(rows, values, labels):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ConfigError("dataset", f"CSV file {path!r} line {line}: integer label {text} is beyond the "
                                             "64-bit range; allowed: -2**63 .. 2**63 - 1 (or text labels)")
        label_array = np.array(values, dtype=np.int64)
    else:
        label_array = np.array(labels, dtype=str)
    try:
        codes, names = _encode_labels(label_array, "dataset")
    except ConfigError as err:
        raise ConfigError("dataset", f"CSV file {path!r}: {err.problem}"
                                     + (f"; {label_note}" if label_note else "")) from None
    return x, codes, names, label_note


_OTHER_SEPARATORS = ((";", "semicolons (;)"), ("\t", "tabs"), ("|", "vertical bars (|)"), (" ", "spaces"))
"""Separators a one-column CSV line may hold instead of commas, with how an error names them."""


def _csv_error(err, field_limit, spans_lines):
    """What a ``csv.Error`` of a row means, and what is allowed."""
    if "field larger than field limit" in str(err):
        return (f"a field is longer than {field_limit} characters, the most allowed"
                + (" (this row spans several lines: an unclosed quote?)" if spans_lines else ""))
    return _one_line(err)


_INT64_MIN, _INT64_MAX = -2**63, 2**63 - 1


def _integer_label(text):
    """The integer a whole-number label's text means (exact for long integers; ``3.0`` is 3)."""
    try:
        return int(text)
    except ValueError:
        return int(float(text))


def _is_integer_text(text):
    try:
        return float(text).is_integer()
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------
# MNIST


def _mnist_folder(data_dir):
    source = ""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get("SPINGPU_DATA") or None
        source = " (from the environment variable SPINGPU_DATA)"
        if data_dir is None:
            raise ConfigError("data_dir", "no MNIST folder given: pass data_dir (--data-dir on the command line) or set the "
                                          "environment variable SPINGPU_DATA to a folder holding "
                                          "the four MNIST IDX files (.gz or not) or mnist.npz")
    path = os.path.expanduser(os.fspath(data_dir))
    if os.path.isfile(path) and path.endswith(".npz"):
        return path
    if os.path.isfile(path):
        raise ConfigError("data_dir", f"{path!r}{source} is a file, not a .npz; expected a folder holding the four "
                                      "MNIST IDX files (.gz or not) or mnist.npz, or the mnist.npz itself")
    if not os.path.isdir(path):
        hint = ("" if source or not os.environ.get("SPINGPU_DATA") else
                "; SPINGPU_DATA applies only where no data_dir is given: remove this one to use it")
        raise ConfigError("data_dir", f"MNIST folder {path!r}{source} does not exist; expected a folder "
                                      f"holding the four MNIST IDX files (.gz or not) or mnist.npz{hint}")
    return path


def _idx_files(folder):
    """{key: path} of the MNIST IDX files (each plain, else gzipped) present in ``folder``."""
    found = {}
    for key, base in MNIST_FILES.items():
        for candidate in (base, base + ".gz"):
            if os.path.isfile(os.path.join(folder, candidate)):
                found[key] = os.path.join(folder, candidate)
                break
    return found


def mnist_files(path):
    """The files the MNIST loader reads from ``path`` (a folder, or an .npz named directly): the
    four IDX files where all are there ({key: path}), else mnist.npz ({"npz": path}); {} if
    neither is there."""
    if os.path.isfile(path):
        return {"npz": path}
    found = _idx_files(path) if os.path.isdir(path) else {}
    if len(found) == len(MNIST_FILES):
        return found
    npz = os.path.join(path, "mnist.npz")
    return {"npz": npz} if os.path.isfile(npz) else {}


def _load_mnist(data_dir, *, seed, val_fraction, max_train):
    folder = _mnist_folder(data_dir)
    files = mnist_files(folder)
    if "npz" in files:
        arrays = _read_mnist_npz(files["npz"])
    elif files:
        arrays = {key: _read_idx(files[key], images=key.startswith("x")) for key in MNIST_FILES}
    else:
        missing = [MNIST_FILES[k] + "[.gz]" for k in MNIST_FILES if k not in _idx_files(folder)]
        raise ConfigError("data_dir", f"no MNIST data in {folder!r}: expected the four IDX files "
                                      f"or mnist.npz; missing {', '.join(missing)} and mnist.npz")
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    for split, xs, ys in (("training", x_train, y_train), ("test", x_test, y_test)):
        if len(xs) != len(ys):
            raise ConfigError("mnist", f"the {split} set has {len(xs)} images but {len(ys)} labels")
        if len(xs) == 0:
            raise ConfigError("mnist", f"the {split} set is empty")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ConfigError("mnist", f"training images are {x_train.shape[1:]} but test images "
                                   f"{x_test.shape[1:]}")
    x_train = x_train.reshape(len(x_train), -1)
    x_test = x_test.reshape(len(x_test), -1)
    y_train = y_train.astype(np.int64)
    y_test = y_test.astype(np.int64)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    names = tuple(str(c) for c in range(n_classes))
    _check_class_sizes(y_train, n_classes, names, ("train", "validation"), "mnist")
    _, n_val = _split_sizes(len(y_train), n_classes, val_fraction)
    idx_train, idx_val = _stratified_holdout(y_train, n_val, seed, "mnist", "validation")
    idx_train = _limit_train(idx_train, y_train, max_train, n_classes, seed, "mnist")
    return _finish("mnist", x_train[idx_train], y_train[idx_train], x_train[idx_val],
                   y_train[idx_val], x_test, y_test, n_classes, names, pooled=True,
                   split=dict(seed=seed, val_fraction=val_fraction, test="official 10,000", max_train=max_train))


def _read_idx(path, *, images):
    """Parse one IDX file (optionally gzipped): uint8 array (n, rows, cols) or (n,)."""
    import gzip
    import zlib

    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            with open(path, "rb") as fh:
                data = fh.read()
    except (OSError, EOFError, zlib.error) as err:
        raise ConfigError("mnist", f"cannot read {path!r} (corrupt or truncated gzip?): "
                                   f"{_one_line(err)}") from None
    magic_expected = _IDX_IMAGES_MAGIC if images else _IDX_LABELS_MAGIC
    ndim = 3 if images else 1
    kind = "images" if images else "labels"
    header_len = 4 + 4 * ndim
    if len(data) < 4:
        raise ConfigError("mnist", f"{path!r} is truncated: {len(data)} bytes, expected an IDX "
                                   f"{kind} file starting with magic 0x{magic_expected:08x}")
    magic = int.from_bytes(data[:4], "big")
    if magic != magic_expected:
        raise ConfigError("mnist", f"{path!r} has magic number 0x{magic:08x}, expected "
                                   f"0x{magic_expected:08x} (IDX {kind}, unsigned bytes, {ndim}-D)")
    if len(data) < header_len:
        raise ConfigError("mnist", f"{path!r} is truncated: {len(data)} bytes, shorter than the "
                                   f"{header_len}-byte IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header_len + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise ConfigError("mnist", f"{path!r} is {state}: {len(data)} bytes, expected {expected} "
                                   f"for {kind} of shape {dims}")
    array = np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)
    if not images and len(array) and array.max() > 9:
        raise ConfigError("mnist", f"{path!r} holds label {int(array.max())}, expected digits 0..9")
    return array


def _read_mnist_npz(path):
    import zipfile

    keys = tuple(MNIST_FILES)
    try:
        if not zipfile.is_zipfile(path):  # np.load would try other formats, and speak of pickles
            raise ConfigError("mnist", f"{path!r} is not an npz archive (a zip file of .npy arrays "
                                       f"{', '.join(keys)})")
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise ConfigError("mnist", f"{path!r} lacks array(s) {', '.join(missing)}; expected "
                                           f"{', '.join(keys)}")
            arrays = {k: np.asarray(npz[k]) for k in keys}
    except ConfigError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError("mnist", f"cannot read {path!r} as an npz archive: {_one_line(err)}") from None
    for k in ("x_train", "x_test"):
        x = arrays[k]
        if x.ndim not in (2, 3):
            raise ConfigError("mnist", f"{path!r}: {k} has shape {x.shape}, expected (n, 28, 28) "
                                       "or (n, 784)")
        if x.dtype.kind in "iu":
            if x.size and (x.min() < 0 or x.max() > 255):
                raise ConfigError("mnist", f"{path!r}: {k} has pixel values outside 0..255")
            arrays[k] = x.astype(np.uint8)
        elif x.dtype.kind == "f":
            if x.size and not (np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 1):
                raise ConfigError("mnist", f"{path!r}: {k} is float with values outside [0, 1]; "
                                           "expected uint8 0..255 or floats already in [0, 1]")
        else:
            raise ConfigError("mnist", f"{path!r}: {k} has dtype {x.dtype}, expected uint8")
    if arrays["x_train"].dtype != arrays["x_test"].dtype:
        arrays["x_train"] = arrays["x_train"].astype(np.float64) / (
            255.0 if arrays["x_train"].dtype == np.uint8 else 1.0)
        arrays["x_test"] = arrays["x_test"].astype(np.float64) / (
            255.0 if arrays["x_test"].dtype == np.uint8 else 1.0)
    for k in ("y_train", "y_test"):
        yv = arrays[k]
        if yv.ndim != 1 or yv.dtype.kind not in "iu":
            raise ConfigError("mnist", f"{path!r}: {k} has shape {yv.shape} and dtype {yv.dtype}, "
                                       "expected a 1-D integer array")
        if yv.size and (yv.min() < 0 or yv.max() > 9):
            raise ConfigError("mnist", f"{path!r}: {k} holds labels outside 0..9")
    return arrays

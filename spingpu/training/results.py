"""The results of training as an xarray Dataset (DESIGN.md 7): names, units, long names."""

from __future__ import annotations

import json

import numpy as np

VARIABLES = {
    # name: (dims, units, long_name)
    "train_loss": (("network", "epoch"), "1", "training loss (softmax cross-entropy, or the distillation loss "
                                              "where distillation is on; mean over the epoch's training samples)"),
    "train_acc": (("network", "epoch"), "1", "training accuracy during the epoch"),
    "val_acc": (("network", "epoch"), "1", "validation accuracy after the epoch"),
    "grad_cosine": (("network", "epoch"), "1",
                    "cosine similarity of the gradient of the hidden layers' weights and biases used with the "
                    "exact-derivative one (last batch; NaN where either is exactly 0, as when the ADC clips every "
                    "reading)"),
    "deriv_rel_err": (("network", "epoch"), "1",
                      "median relative error of the activation-derivative estimates against the junction's exact "
                      "analog slope (fd_symmetric: the mean of its two junctions' slopes) (last batch)"),
    "test_acc": (("network",), "1", "test accuracy after training"),
    "diverged": (("network",), "1", "training was stopped because the loss or a weight gradient became NaN or beyond 3.4e38 (float32's range)"),
    "extrapolated_readings": (("network",), "1",
                              "fraction of the junction readings (training and evaluation) at currents beyond the "
                              "device model's table, where V(I) is the table's end tangent continued linearly (0 for "
                              "a closed-form model; NaN: diverged, or no junctions)"),
}

CELL_VARIABLES = {
    # name: (units, long_name); one value per cell of a study (no network dimension)
    "teacher_test_acc": ("1", "test accuracy of the digital teacher whose logits the students were distilled "
                              "from (NaN: no distillation)"),
}

# The engine that trained a cell's networks, a CF flag variable of a study's store (int8; 0, what an
# unwritten zarr chunk reads as: not run yet); the fused engines keep every network in float64, the
# others in training.dtype.
ENGINES = ("not_run", "numpy", "fused_cpu", "batched_cpu", "fused_cuda", "batched_cuda")
ENGINE_ATTRS = {"long_name": "engine that trained the cell's networks; fused engines train in float64, the others "
                             "in training.dtype",
                "units": "1", "flag_values": list(range(len(ENGINES))), "flag_meanings": " ".join(ENGINES)}


def engine_code(attrs):
    """The :data:`ENGINES` index of a result's ``engine`` and ``backend`` attributes."""
    return ENGINES.index("numpy" if attrs["engine"] == "numpy" else f"{attrs['engine']}_{attrs['backend']}")


def netcdf_nbytes(n_networks, epochs):
    """An upper bound of the bytes of the netCDF4 file of ``n_networks`` x ``epochs`` results:
    8 bytes for every value of every variable and coordinate (bool ``diverged`` takes 1), and
    1 MiB for the attributes (the configuration) and HDF5's own records."""
    per_network = sum(8 * (epochs if dims == ("network", "epoch") else 1) for dims, _, _ in VARIABLES.values())
    return n_networks * (per_network + 8) + 8 * epochs + 2**20


def make_results(metrics, networks, epochs, attrs):
    """An xarray Dataset from a dict of NumPy arrays named as in ``VARIABLES``."""
    import xarray as xr

    data_vars = {}
    for name, (dims, units, long_name) in VARIABLES.items():
        data_vars[name] = xr.Variable(dims, metrics[name], attrs={"units": units, "long_name": long_name})
    coords = {
        "network": ("network", np.asarray(networks, dtype=np.int64), {"long_name": "network (chip) index",
                                                                      "units": "1"}),
        "epoch": ("epoch", np.arange(1, epochs + 1), {"long_name": "epoch", "units": "1"}),
    }
    clean = {k: (json.dumps(v) if isinstance(v, (dict, list, tuple)) else v) for k, v in attrs.items()}
    return xr.Dataset(data_vars, coords=coords, attrs=clean)

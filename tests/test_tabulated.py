"""The ``tabulated`` model (DESIGN.md 3.3): a measured I-V curve from a CSV, PCHIP-interpolated.

References: scipy's PchipInterpolator (value and derivative), straight-line continuation beyond
the table written out here, and float64 central differences of the model's own V.
"""

import math

import numpy as np
import pytest
from scipy.interpolate import PchipInterpolator

from spingpu import ConfigError, Variability, get_model, sample_layer

R, A, I0 = 800.0, 0.3, 2.5e-4  # V = R I + A tanh(I / I0)
I_MAX = 1e-3


def curve(i):
    return R * i + A * np.tanh(i / I0)


def make_points(seed=0, n=30):
    rng = np.random.default_rng(seed)
    while True:
        i = np.sort(np.concatenate([[-I_MAX, I_MAX], rng.uniform(-I_MAX, I_MAX, n - 2)]))
        if np.min(np.diff(i)) > 5e-6:
            return i, curve(i)


def write_csv(path, rows, header="current_A,voltage_V"):
    lines = ([header] if header is not None else []) + [f"{a:.17g},{b:.17g}" for a, b in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


class Reference:
    """PCHIP inside the table (scipy), the end tangent lines outside it."""

    def __init__(self, i, v):
        self.i, self.p = i, PchipInterpolator(i, v)
        self.dp = self.p.derivative()

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float64)
        lo, hi = self.i[0], self.i[-1]
        xc = np.clip(x, lo, hi)
        v = self.p(xc) + self.dp(xc) * (x - xc)
        return v, self.dp(xc)


@pytest.fixture(scope="module")
def tab(tmp_path_factory):
    i, v = make_points()
    path = write_csv(tmp_path_factory.mktemp("iv") / "curve.csv", zip(i, v))
    return get_model("tabulated", iv_csv=path), Reference(i, v), i, v, path


def test_model_description(tab):
    model = tab[0]
    assert model.name == "tabulated"
    assert model.parameter_names == ("i_scale", "v_scale", "v_offset")
    np.testing.assert_array_equal(model.nominal, [1.0, 1.0, 0.0])


def test_iv_matches_scipy_pchip_inside_table(tab):
    model, ref, i, v, _ = tab
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-I_MAX, I_MAX, 5000), i])
    got_v, got_d = model.iv(x)
    want_v, want_d = ref.p(x), ref.dp(x)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-10, atol=1e-12 * np.abs(v).max())
    np.testing.assert_allclose(got_d, want_d, rtol=1e-10)
    # The curve passes through the measured points.
    np.testing.assert_allclose(model.iv(i)[0], v, rtol=1e-14, atol=1e-15)


def test_linear_extrapolation_outside_table(tab):
    model, ref, i, v, _ = tab
    rng = np.random.default_rng(2)
    below = rng.uniform(-5 * I_MAX, i[0], 500)
    above = rng.uniform(i[-1], 5 * I_MAX, 500)
    for x, k in ((below, 0), (above, -1)):
        slope = ref.dp(i[k])
        got_v, got_d = model.iv(x)
        np.testing.assert_allclose(got_v, v[k] + slope * (x - i[k]), rtol=1e-12)
        np.testing.assert_allclose(got_d, slope, rtol=1e-12)
    # Not scipy's default (cubic) extrapolation.
    far = np.array([-3 * I_MAX, 3 * I_MAX])
    assert np.all(np.abs(model.iv(far)[0] - ref.p(far, extrapolate=True)) > 1e-3)


def test_scales_and_offset(tab):
    model, ref, *_ = tab
    rng = np.random.default_rng(3)
    n = 4000
    params = np.column_stack([np.exp(rng.normal(0, 0.3, n)), np.exp(rng.normal(0, 0.3, n)),
                              rng.normal(0, 0.05, n)])
    s_i, s_v, v0 = params.T
    x = rng.uniform(-2 * I_MAX, 2 * I_MAX, n)  # in and beyond the (scaled) table
    got_v, got_d = model.iv(x, params)
    v_ref, d_ref = ref(x / s_i)
    np.testing.assert_allclose(got_v, s_v * v_ref + v0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_d, s_v / s_i * d_ref, rtol=1e-10)
    # Broadcasting: one current against many devices.
    bv, bd = model.iv(3e-4, params)
    np.testing.assert_allclose(bv, s_v * ref(3e-4 / s_i)[0] + v0, rtol=1e-10, atol=1e-12)


def test_derivative_matches_central_difference(tab):
    model, _, i, _, _ = tab
    rng = np.random.default_rng(4)
    n = 3000
    params = np.column_stack([np.exp(rng.normal(0, 0.2, n)), np.exp(rng.normal(0, 0.2, n)),
                              rng.normal(0, 0.05, n)])
    x = np.concatenate([rng.uniform(-1.5 * I_MAX, 1.5 * I_MAX, n - 60), i, i + 1e-9])
    # h = 1e-10 A: rounding ~ eps |V| / h ~ 1e-5 ohm; truncation where the PCHIP's second
    # derivative jumps (knots) ~ h |V''| ~ 1e-10 * 1e7 = 1e-3 ohm; dV/dI ~ 1e3 ohm.
    h = 1e-10
    _, d = model.iv(x, params)
    vp, _ = model.iv(x + h, params)
    vm, _ = model.iv(x - h, params)
    fd = (vp - vm) / (2 * h)
    assert np.max(np.abs(d - fd) / np.abs(fd)) < 1e-5


def test_continuous_value_and_slope_at_knots(tab):
    model, _, i, _, _ = tab
    delta = 1e-13
    vl, dl = model.iv(i - delta)
    vr, dr = model.iv(i + delta)
    assert np.max(np.abs(vr - vl)) < 1e-8  # |dV/dI| * 2 delta ~ 1e-9 V
    np.testing.assert_allclose(dl, dr, rtol=1e-5)


def test_monotone_data_give_monotone_curve(tab):
    model, *_ = tab
    x = np.linspace(-1.2 * I_MAX, 1.2 * I_MAX, 20_001)
    v, d = model.iv(x)
    assert np.all(d > 0) and np.all(np.diff(v) > 0)


def test_table_holds_points_and_pchip_slopes(tab, tmp_path):
    model, ref, i, v, path = tab
    np.testing.assert_array_equal(model.table[0], i)
    np.testing.assert_array_equal(model.table[1], v)
    np.testing.assert_allclose(model.table[2], ref.dp(i), rtol=1e-14)
    # Without a header, and from arrays, the same curve.
    plain = get_model("tabulated", iv_csv=write_csv(tmp_path / "plain.csv", zip(i, v), header=None))
    np.testing.assert_array_equal(plain.table, model.table)
    from_arrays = get_model("tabulated", iv_table=(i, v))
    np.testing.assert_array_equal(from_arrays.table, model.table)
    # A path given as a string works as well as a Path.
    np.testing.assert_array_equal(get_model("tabulated", iv_csv=str(path)).table, model.table)


def test_variability_acts_through_scales_and_offset(tab):
    model, ref, i, v, _ = tab
    var = Variability(0.0, 0.1, 0.05)
    s = sample_layer(model, var, 11, np.arange(20_000), 0, 1)[:, 0, 0]
    n = s.shape[0]
    sd = math.sqrt(0.1**2 + 0.05**2)
    for k in (0, 1):  # lognormal scales
        y = np.log(s[:, k])
        assert abs(y.mean()) < 5 * sd / math.sqrt(n)
        assert abs(y.std(ddof=1) - sd) < 5 * sd / math.sqrt(2 * (n - 1))
    # v_offset is normal; a unit spread is the table's largest |V|.
    sd_v = sd * np.abs(v).max()
    assert abs(s[:, 2].mean()) < 5 * sd_v / math.sqrt(n)
    assert abs(s[:, 2].std(ddof=1) - sd_v) < 5 * sd_v / math.sqrt(2 * (n - 1))
    x = np.random.default_rng(5).uniform(-I_MAX, I_MAX, n)
    got_v, _ = model.iv(x, s)
    np.testing.assert_allclose(got_v, s[:, 1] * ref(x / s[:, 0])[0] + s[:, 2], rtol=1e-10, atol=1e-12)


# --- bad curves --------------------------------------------------------------------------------

def _rows():
    i, v = make_points(seed=7, n=8)
    return [[f"{a:.17g}", f"{b:.17g}"] for a, b in zip(i, v)]


def _text(rows, header=True):
    return "\n".join((["current_A,voltage_V"] if header else []) + [",".join(r) for r in rows]) + "\n"


def _unsorted():
    rows = _rows()
    rows[3], rows[4] = rows[4], rows[3]
    return _text(rows)


def _duplicated():
    rows = _rows()
    rows[5][0] = rows[4][0]
    return _text(rows)


def _with(cell_row, col, value):
    rows = _rows()
    rows[cell_row][col] = value
    return _text(rows)


@pytest.mark.parametrize("text, problems", [
    (_unsorted(), ["not sorted", "point 5", "strictly increasing"]),
    (_duplicated(), ["duplicated current", "point 6", "strictly increasing"]),
    (_text(_rows()[:3]), ["3 points is too short", "at least 4"]),
    (_text([]), ["0 points is too short"]),
    (_with(2, 1, "nan"), ["line 4", "finite"]),
    (_with(6, 0, "inf"), ["line 8", "finite"]),
    (_with(2, 1, "abc"), ["line 4", "'abc'", "not a pair of numbers"]),
    (_text([r[:1] for r in _rows()], header=False), ["line 1", "expected 2 columns", "got 1"]),
])
def test_bad_csv_raises(tmp_path, text, problems):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        get_model("tabulated", iv_csv=path)
    assert err.value.field == "iv-csv"
    msg = str(err.value)
    assert msg.startswith("iv-csv:") and str(path) in msg
    for p in problems:
        assert p in msg


def test_missing_csv_raises(tmp_path):
    path = tmp_path / "nowhere.csv"
    with pytest.raises(ConfigError) as err:
        get_model("tabulated", iv_csv=path)
    assert err.value.field == "iv-csv"
    assert "file not found" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ConfigError, match=f"^iv-csv: {tmp_path} is a folder; expected a CSV file"):
        get_model("tabulated", iv_csv=tmp_path)  # a directory is not a file


@pytest.mark.parametrize("table, problem", [
    ((np.array([0.0, 1.0, 0.5, 2.0]), np.arange(4.0)), "not sorted"),
    ((np.arange(5.0), np.arange(4.0)), "different lengths"),
    ((np.array([0.0, 1.0, 2.0, np.nan]), np.arange(4.0)), "finite"),
    ((np.array([-1e300, 0.0, 1e300, 2e300]), np.arange(4.0)), r"current -1e\+300 \(point 1\) is beyond \+-1 A"),
    ((np.array([-1e-300, 0.0, 1e-300, 2e-300]), np.arange(4.0)),  # slopes of 1e300 ohm, PCHIP's overflow
     r"^iv_table: the curve's slopes dV/dI overflow float64: currents too close together"),
])
def test_bad_table_raises(table, problem):
    with pytest.raises(ConfigError, match=problem):
        get_model("tabulated", iv_table=table)


def test_tabulated_needs_exactly_one_curve(tab):
    with pytest.raises(ConfigError) as err:
        get_model("tabulated")
    assert err.value.field == "iv-csv" and "needs exactly one measured curve" in str(err.value)
    _, _, i, v, path = tab
    with pytest.raises(ConfigError, match="iv-csv"):
        get_model("tabulated", iv_csv=path, iv_table=(i, v))
    with pytest.raises(ConfigError, match="iv-csv: a measured curve is only used by the 'tabulated' model"):
        get_model("stt_compact", iv_csv=path)


def test_nominal_override_is_validated(tab):
    path = tab[4]
    m = get_model("tabulated", iv_csv=path, v_offset=0.1, v_scale=2.0)
    np.testing.assert_array_equal(m.nominal, [1.0, 2.0, 0.1])
    with pytest.raises(ConfigError, match="i_scale"):
        get_model("tabulated", iv_csv=path, i_scale=0.0)


@pytest.mark.parametrize("prefix", ["\ufeff", "# measured 2026\n", "\n", "\ufeffcurrent_A,voltage_V\n",
                                    "# sample 7\ncurrent_A,voltage_V\n"])
def test_bom_comments_and_header_keep_every_point(tmp_path, prefix):
    data = "-1e-3,-0.9\n-5e-4,-0.4\n0,0\n5e-4,0.4\n1e-3,0.9\n"
    path = tmp_path / "iv.csv"
    path.write_text(prefix + data, encoding="utf-8")
    model = get_model("tabulated", iv_csv=path)
    assert model.table.shape == (3, 5)
    np.testing.assert_array_equal(model.table[0], [-1e-3, -5e-4, 0.0, 5e-4, 1e-3])


# --- bad input: files that are not text, tables that are not arrays, plain numbers in messages ---

def test_binary_csv_is_one_line_error(tmp_path):
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x81,\x92\n")
    with pytest.raises(ConfigError) as err:
        get_model("tabulated", iv_csv=path)
    assert err.value.field == "iv-csv"
    assert str(err.value) == f"iv-csv: {path} is not a UTF-8 text file (byte 0): expected a CSV of current in A, voltage in V"


def test_messages_show_plain_numbers(tmp_path):
    path = tmp_path / "iv.csv"
    path.write_text("current,voltage\n0.1,0\n0.64,1\n-0.536,2\n0.9,3\n")
    with pytest.raises(ConfigError) as err:
        get_model("tabulated", iv_csv=path)
    assert "not sorted, current -0.536 (point 3) follows 0.64" in str(err.value)
    assert "np.float64" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        get_model("tabulated", iv_table=(np.array([0.0, 0.5, 0.5, 1.0]), np.arange(4.0)))
    assert "duplicated current 0.5 (point 3)" in str(err.value)


@pytest.mark.parametrize("table", [5, "iv.csv", (np.arange(4.0),), (np.arange(4.0),) * 4])
def test_iv_table_must_be_two_or_three_arrays(table):
    with pytest.raises(ConfigError) as err:
        get_model("tabulated", iv_table=table)
    assert err.value.field == "iv_table"
    assert "expected two or three arrays (current in A, voltage in V, optionally dV/dI in ohm), got" in str(err.value)


def test_iv_table_of_text_is_an_error():
    with pytest.raises(ConfigError) as err:
        get_model("tabulated", iv_table=(["0", "1", "2", "x"], np.arange(4.0)))
    assert err.value.field == "iv_table" and "arrays of numbers" in str(err.value)


@pytest.mark.parametrize("name, value, allowed", [
    ("i_scale", 1e-6, "0.001 <= value <= 1000"),
    ("v_scale", math.inf, "0.001 <= value <= 1000"),
    ("v_offset", 1e4, "-1000 <= value <= 1000"),
    ("v_offset", "0.1", None),
])
def test_parameter_ranges(tab, name, value, allowed):
    with pytest.raises(ConfigError) as err:
        get_model("tabulated", iv_csv=tab[4], **{name: value})
    assert err.value.field == f"param {name}"
    assert (allowed or "is not a number") in str(err.value)


def test_a_training_run_records_which_measured_curve_it_used(tab, tmp_path, make_blobs):
    """The same curve from another file gives the same sha256, a curve with one voltage changed
    another one; the description names the file; the attributes survive netCDF."""
    import xarray as xr

    from spingpu.training import TrainConfig, train

    model, _, i, v, path = tab
    data, cfg = make_blobs(3, 60, 4, 1), TrainConfig(hidden=(3,), epochs=1)

    def run(m):
        return train(data, cfg, n_networks=2, model=m, backend="numpy")

    copy = write_csv(tmp_path / "copy.csv", zip(i, v))
    changed_v = v.copy()
    changed_v[7] *= 1.001
    changed = write_csv(tmp_path / "changed.csv", zip(i, changed_v))
    first, same, other = (run(get_model("tabulated", iv_csv=p)) for p in (path, copy, changed))
    assert first.attrs["device_table_sha256"] == same.attrs["device_table_sha256"]
    assert first.attrs["device_table_sha256"] != other.attrs["device_table_sha256"]
    assert len(first.attrs["device_table_sha256"]) == 64
    assert f"from {path.resolve()}" in first.attrs["device_description"]
    first.to_netcdf(tmp_path / "r.nc")
    assert xr.open_dataset(tmp_path / "r.nc").attrs["device_table_sha256"] == first.attrs["device_table_sha256"]


def test_measured_slopes_are_the_knots_slopes_and_reproduce_a_cubic_exactly():
    """With V and dV/dI of a cubic at the knots, cubic Hermite interpolation is exact between them
    (PCHIP's estimated slopes are not): the given slopes are used as they are."""
    rng = np.random.default_rng()
    i = np.sort(rng.uniform(-1e-3, 1e-3, 9))
    c0, c1, c2, c3 = rng.uniform(-0.05, 0.05), rng.uniform(800, 1200), rng.uniform(-1e4, 1e4), rng.uniform(1e7, 5e7)
    cubic = lambda x: c0 + c1 * x + c2 * x**2 + c3 * x**3  # noqa: E731 (dV/dI > 0 on +-1 mA)
    slope = lambda x: c1 + 2 * c2 * x + 3 * c3 * x**2  # noqa: E731
    measured = get_model("tabulated", iv_table=(i, cubic(i), slope(i)))
    np.testing.assert_array_equal(measured.aux_table[2], slope(i))
    x = rng.uniform(i[0], i[-1], 50)
    v, d = measured.iv(x)
    np.testing.assert_allclose(v, cubic(x), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(d, slope(x), rtol=1e-10)
    v_pchip, _ = get_model("tabulated", iv_table=(i, cubic(i))).iv(x)
    assert np.max(np.abs(v_pchip - cubic(x))) > 1e3 * np.max(np.abs(v - cubic(x)))


@pytest.mark.parametrize("extra, message", [
    ([np.ones(3)], "iv_table: dV/dI must be 4 finite numbers, one per current; got 3"),
    ([np.array([1.0, np.nan, 1.0, 1.0])], "iv_table: dV/dI must be 4 finite numbers, one per current; got 4 with NaN "
                                          "or inf"),
    ([np.ones(4), np.ones(4)], "iv_table: expected two or three arrays (current in A, voltage in V, optionally dV/dI "
                               "in ohm), got 4 arrays"),
])
def test_bad_measured_slopes_are_one_line_errors(extra, message):
    with pytest.raises(ConfigError) as err:
        get_model("tabulated", iv_table=(np.arange(4.0) * 1e-4, np.arange(4.0) * 0.1, *extra))
    assert str(err.value) == message


# --- columns beyond current and voltage; the range the table covers ---------------------------

@pytest.mark.parametrize("columns, header", [(3, ""), (4, "# measured\n\n"), (3, "current_A,voltage_V\n")])
def test_a_csv_of_three_or_more_columns_is_refused(tmp_path, columns, header):
    """The extra columns (a measured dV/dI, a temperature) are not dropped silently: the file is
    refused at its first row of them, naming the Python route for measured slopes."""
    path = tmp_path / "iv3.csv"
    line = header.count("\n") + 1
    path.write_text(header + "".join(
        ",".join([f"{a:.17g}", f"{b:.17g}"] + ["800"] * (columns - 2)) + "\n" for a, b in zip(*make_points(n=6))))
    with pytest.raises(ConfigError) as err:
        get_model("tabulated", iv_csv=path)
    assert err.value.field == "iv-csv"
    assert str(err.value) == (f"iv-csv: {path} line {line}: expected 2 columns (current A, voltage V), got {columns}; "
                              "measured dV/dI (ohm) can be given from Python as "
                              "get_model(\"tabulated\", iv_table=(I, V, dVdI))")


def test_a_one_column_csv_is_refused_without_the_slope_hint(tmp_path):
    path = tmp_path / "iv1.csv"
    path.write_text("0\n1e-4\n2e-4\n3e-4\n")
    with pytest.raises(ConfigError) as err:
        get_model("tabulated", iv_csv=path)
    assert str(err.value) == f"iv-csv: {path} line 1: expected 2 columns (current A, voltage V), got 1"


def test_a_trailing_separator_is_not_a_column(tmp_path):
    i, v = make_points(n=6)
    path = tmp_path / "trailing.csv"
    path.write_text("current_A,voltage_V,\n" + "".join(f"{a:.17g},{b:.17g},\n" for a, b in zip(i, v)))
    np.testing.assert_array_equal(get_model("tabulated", iv_csv=path).table[:2], [i, v])


def test_table_current_range_of_each_model(tab):
    from spingpu.devices.tabulated import table_current_range

    model, _, i, _, path = tab
    assert table_current_range(model) == (i[0], i[-1]) == (-I_MAX, I_MAX)
    # V(I) = V0(I / i_scale): the nominal device's table reaches i_scale times further
    assert table_current_range(get_model("tabulated", iv_csv=path, i_scale=2.0)) == (-2 * I_MAX, 2 * I_MAX)
    assert table_current_range(get_model("macrospin")) == (-600e-6, 600e-6)
    assert table_current_range(get_model("macrospin", table_i_min=-1e-4, table_i_max=3e-4)) == (-1e-4, 3e-4)
    assert table_current_range(get_model("stt_compact")) is None  # closed form: no table


def test_beyond_table_is_where_the_curve_is_the_end_tangent(tab):
    """``beyond_table`` is True exactly where V(I) leaves the PCHIP curve for its end tangent
    (scipy reference), for junctions with their own current scale."""
    model, ref, i, _, _ = tab
    rng = np.random.default_rng()
    scale = rng.uniform(0.5, 2.0, 200)
    current = rng.uniform(-2.5 * I_MAX, 2.5 * I_MAX, 200)
    params = np.stack([scale, np.ones(200), np.zeros(200)], axis=-1)
    x = current / scale
    expected = (x < i[0]) | (x > i[-1])
    np.testing.assert_array_equal(model.beyond_table(current, params), expected)
    assert 20 < expected.sum() < 180  # both kinds drawn
    np.testing.assert_array_equal(model.beyond_table([i[0], i[-1]]), [False, False])  # the end knots are measured
    assert not get_model("stt_compact").beyond_table(rng.uniform(-1, 1, 50)).any()  # closed form


@pytest.mark.filterwarnings("ignore::spingpu.UnusedSettingWarning")  # the tanh case
@pytest.mark.parametrize("grad_mode", ["fd_forward", "fd_single", "fd_symmetric", "model", "oracle", "tanh"])
def test_training_counts_the_readings_beyond_the_table(grad_mode, make_blobs):
    """``extrapolated_readings``: 0 with a table that holds every current, exactly 1 with one that
    holds none (which checks the count of readings taken, mode by mode), NaN for a digital
    network, and the same fraction from the NumPy reference, the fused and the batched CPU engine
    with a table that holds some."""
    import warnings

    from spingpu import Readout
    from spingpu import ExtrapolationWarning
    from spingpu.training import TrainConfig, train
    from spingpu.training.batched_engine import BatchedCpuEngine
    from spingpu.training.trainer import _train_batched, extrapolated_fraction

    data = make_blobs(5, 40, 3, 1)
    cfg = TrainConfig(hidden=(4, 3), epochs=2, lr=0.05, seed=3, dtype="float64", batch_size=12, grad_mode=grad_mode,
                      variability=Variability(sigma_d2d=0.1, sigma_pair=0.02), readout=Readout(read_noise=1e-3))
    nets = np.array([2, 6, 7])

    def model(lo, hi):
        i = np.linspace(lo, hi, 12)
        return get_model("tabulated", iv_table=(i, curve(i)))

    for lo, hi, expected in ((-1.0, 1.0, 0.0), (0.5, 1.0, 1.0)):
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            fraction = train(data, cfg, networks=nets, model=model(lo, hi), backend="cpu").extrapolated_readings.values
        np.testing.assert_array_equal(fraction, np.nan if grad_mode == "tanh" else expected)
        said = [str(w.message) for w in said if w.category is ExtrapolationWarning]
        assert said == ([] if expected == 0 or grad_mode == "tanh" else [
            "extrapolated_readings: 3 of 3 networks read junctions beyond the measured curve's current range, up to "
            "100 % of a network's readings; there V(I) is the end tangent continued linearly (dV/dI constant): keep "
            "the drive within it (i_bias, i_gain, dac_range)"])
    if grad_mode == "tanh":
        return
    some = model(-1.5e-4, 2e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        ref = train(data, cfg, networks=nets, model=some, backend="numpy").extrapolated_readings.values
        fused = train(data, cfg, networks=nets, model=some, backend="cpu").extrapolated_readings.values
        metrics, _, _ = _train_batched(BatchedCpuEngine, data, cfg, nets, some, None, False)
    batched = extrapolated_fraction(metrics["readings_beyond_table"], metrics["diverged"], cfg, data)
    assert np.all((0.05 < ref) & (ref < 0.95)), ref
    np.testing.assert_array_equal(fused, ref)
    np.testing.assert_array_equal(batched, ref)


@pytest.mark.parametrize("knots", ["uniform", "measured"])
def test_the_knot_interval_is_the_one_bisection_finds(knots):
    """hermite's knot_interval reads the interval off the knots' spacing, checks it, and bisects
    where the check fails: for every x strictly inside the table it must be the unique
    xs[lo] <= x < xs[lo + 1] (NumPy's searchsorted), at the knots themselves and one ulp either side
    too, for evenly spaced (linspace, as macrospin tables) and uneven (measured) knots; a NaN gives
    bisection's (0, 1)."""
    from spingpu.kernels.hermite import knot_interval

    rng = np.random.default_rng()
    n = int(rng.integers(2, 300))
    lo_x, hi_x = sorted(rng.uniform(-2e-3, 2e-3, 2))
    if knots == "uniform":
        xs = np.linspace(lo_x, hi_x, n)
    else:
        xs = np.unique(np.concatenate([[lo_x, hi_x], rng.uniform(lo_x, hi_x, n - 2) ** 3 / hi_x**2]))
        xs = xs[(xs >= lo_x) & (xs <= hi_x)]
    inner = xs[1:-1]
    x = np.concatenate([rng.uniform(xs[0], xs[-1], 2000), inner, np.nextafter(inner, -np.inf),
                        np.nextafter(inner, np.inf), [np.nextafter(xs[0], np.inf), np.nextafter(xs[-1], -np.inf)]])
    x = x[(x > xs[0]) & (x < xs[-1])]
    want = np.searchsorted(xs, x, side="right") - 1
    got = np.array([knot_interval(v, xs) for v in x])
    np.testing.assert_array_equal(got[:, 0], want)
    np.testing.assert_array_equal(got[:, 1], want + 1)
    assert knot_interval(np.nan, xs) == (0, 1)

"""ACS-Income through folktables, offline: a small PUMS-format person file the tests write."""

import dataclasses
import importlib
import random
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.errors import ConfigError, DataError
from simulations import acs
from simulations import datasets as ds
from simulations import engine
from simulations.datasets import load_dataset, prepare
from simulations.scenario import CollectiveConfig, Scenario, load_scenario

folktables = pytest.importorskip("folktables")
load_acs = importlib.import_module("folktables.load_acs")  # the module; folktables.load_acs is a function

ROOT = Path(__file__).resolve().parents[2]
FEATURES_SEX = ["AGEP", "COW", "SCHL", "MAR", "OCCP", "POBP", "RELP", "WKHP", "RAC1P"]
FEATURES_RACE = ["AGEP", "COW", "SCHL", "MAR", "OCCP", "POBP", "RELP", "WKHP", "SEX"]

# Hand-made first rows: (AGEP, WKHP, PINCP, PWGTP, SEX, RAC1P) -> kept?, y, a(sex), a(race)
HAND = [
    ((30, 40, 60000, 10, 2, 1), (True, 1, 1, 0)),    # kept, above 50K, female, White
    ((16, 40, 60000, 10, 1, 1), (False,)),            # AGEP must be > 16
    ((45, 35, 50000, 12, 1, 2), (True, 0, 0, 1)),     # exactly 50000 is not > 50000; Black
    ((52, 50, 50001, 8, 2, 6), (True, 1, 1, 1)),      # just above; Asian
    ((40, None, 70000, 9, 1, 1), (False,)),           # no usual hours (WKHP empty) -> dropped
    ((38, 20, 100, 5, 2, 1), (False,)),               # PINCP must be > 100
    ((60, 45, 90000, 0, 1, 1), (False,)),             # PWGTP must be >= 1
    ((25, 30, 101, 3, 1, 9), (True, 0, 0, 1)),        # smallest income kept; two or more races
]
N_RANDOM = 392


def pums_frame(seed: int = 0, n: int = N_RANDOM) -> pd.DataFrame:
    """A PUMS person file in the Census layout: the hand rows, then ``n`` random ones."""
    rng = np.random.default_rng(seed)
    rows = []
    for (agep, wkhp, pincp, pwgtp, sex, rac1p), _ in HAND:
        rows.append(dict(AGEP=agep, WKHP=wkhp, PINCP=pincp, PWGTP=pwgtp, SEX=sex, RAC1P=rac1p))
    for _ in range(n):
        child = rng.random() < 0.08
        works = not child and rng.random() < 0.85
        rows.append(dict(
            AGEP=int(rng.integers(5, 16)) if child else int(rng.integers(17, 80)),
            WKHP=int(rng.integers(1, 70)) if works else None,
            PINCP=None if child else float(np.round(rng.lognormal(10.6, 0.9), -1)),
            PWGTP=int(rng.integers(0, 60)),
            SEX=int(rng.integers(1, 3)),
            RAC1P=int(rng.choice([1, 1, 1, 2, 6, 8, 9])),
        ))
    frame = pd.DataFrame(rows)
    m = len(frame)
    frame.insert(0, "RT", "P")
    frame.insert(1, "SERIALNO", [f"2018GQ{i:07d}" for i in range(m)])
    frame["COW"] = rng.integers(1, 9, m)
    frame["SCHL"] = rng.integers(1, 25, m)
    frame["MAR"] = rng.integers(1, 6, m)
    frame["OCCP"] = rng.choice([10, 2310, 4720, 9130], m)
    frame["POBP"] = rng.choice([6, 36, 210, 303], m)
    frame["RELP"] = rng.integers(0, 18, m)
    return frame


def write_pums(folder: Path, state: str = "CA", year: int = 2018, horizon: str = "1-Year", **kw) -> Path:
    """Lay a file out as the mirror/cache expects: <folder>/acs/<year>/<horizon>/psam_p<code>.csv."""
    path = folder / "acs" / str(year) / horizon / acs.pums_filename(state, year)
    path.parent.mkdir(parents=True, exist_ok=True)
    pums_frame(**kw).to_csv(path, index=False, float_format="%.0f")
    return path


def reference(frame: pd.DataFrame) -> pd.DataFrame:
    """folktables' adult_filter and target, written out independently."""
    keep = (frame.AGEP > 16) & (frame.PINCP > 100) & (frame.WKHP > 0) & (frame.PWGTP >= 1)
    out = frame.loc[keep].reset_index(drop=True)
    out["y"] = (out.PINCP > 50000).astype(int)
    return out


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty cache, a mirror with CA 2018 1-Year, and every way to the network fails the test."""
    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(load_acs, "download_and_extract", no_network)
    mirror = tmp_path / "mirror"
    write_pums(mirror)
    monkeypatch.setenv(ds.MIRROR_ENV, str(mirror))
    monkeypatch.setenv(ds.DATA_HOME_ENV, str(tmp_path / "cache"))
    acs._income_frame.cache_clear()
    return mirror


def test_registered_with_its_options():
    assert "acs-income" in ds.DATASETS
    with pytest.raises(ConfigError, match="unknown option.*allowed: states, year, horizon, survey, n, random_state"):
        load_dataset("acs-income", state="CA")
    with pytest.raises(ConfigError, match="sensitive='age' is not available for dataset 'acs-income'; allowed: sex, race"):
        load_dataset("acs-income", sensitive="age")


def test_reads_the_mirror_without_network(offline, tmp_path):
    before = random.getstate()
    data = load_dataset("acs-income")  # default: sex, CA, 2018, 1-Year
    assert random.getstate() == before  # folktables reseeds `random`; the loader puts it back
    assert not (tmp_path / "cache").exists()  # the mirror is read in place, nothing copied
    assert data.name == "acs-income" and data.sensitive == "sex"

    ref = reference(pums_frame())
    assert data.n_samples == len(ref) > 150
    np.testing.assert_array_equal(data.y, ref.y)
    np.testing.assert_array_equal(data.a, (ref.SEX == 2).astype(int))
    np.testing.assert_array_equal(data.features["AGEP"], ref.AGEP)
    np.testing.assert_array_equal(data.features["OCCP"], ref.OCCP)
    # by hand: the kept hand rows come first, in file order
    kept = [out for _, out in HAND if out[0]]
    assert data.y[: len(kept)].tolist() == [y for _, y, _, _ in kept] == [1, 0, 1, 0]
    assert data.a[: len(kept)].tolist() == [a for _, _, a, _ in kept] == [1, 0, 1, 0]
    assert data.features["RAC1P"][: len(kept)].tolist() == [1, 2, 6, 9]
    # both groups with both labels
    assert {(int(a), int(y)) for a, y in zip(data.a, data.y)} == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_feature_columns_and_types(offline):
    sex = load_dataset("acs-income", sensitive="sex")
    assert list(sex.features.columns) == FEATURES_SEX
    assert sex.numerical == ("AGEP", "WKHP")
    assert sex.categorical == ("COW", "SCHL", "MAR", "OCCP", "POBP", "RELP", "RAC1P")
    assert all(sex.features[c].dtype == np.int64 for c in sex.categorical)

    race = load_dataset("acs-income", sensitive="race")
    assert list(race.features.columns) == FEATURES_RACE and "RAC1P" not in race.features
    assert race.categorical == ("COW", "SCHL", "MAR", "OCCP", "POBP", "RELP", "SEX")
    ref = reference(pums_frame())
    np.testing.assert_array_equal(race.a, (ref.RAC1P != 1).astype(int))
    np.testing.assert_array_equal(race.y, sex.y)

    prep = prepare(sex, random_state=0)
    assert {"AGEP", "WKHP"} <= set(prep.feature_names) and "SEX" not in " ".join(prep.feature_names)
    assert np.isfinite(prep.X_train).all()


def test_subsampling_is_seeded(offline):
    full = load_dataset("acs-income")
    one = load_dataset("acs-income", n=50, random_state=1)
    again = load_dataset("acs-income", n=50, random_state=1)
    other = load_dataset("acs-income", n=50, random_state=2)
    assert one.n_samples == 50
    pd.testing.assert_frame_equal(one.features, again.features)
    np.testing.assert_array_equal(one.y, again.y)
    assert not one.features.equals(other.features)
    # the draw is a subset of the full rows, kept in file order, labels and groups travel along
    rows = np.sort(np.random.default_rng(1).choice(full.n_samples, size=50, replace=False))
    pd.testing.assert_frame_equal(one.features, full.features.iloc[rows].reset_index(drop=True))
    np.testing.assert_array_equal(one.a, full.a[rows])
    np.testing.assert_array_equal(one.y, full.y[rows])
    with pytest.raises(DataError, match=f"n=100000 asks for more rows than the {full.n_samples} left"):
        load_dataset("acs-income", n=100_000)


def test_several_states_are_concatenated(offline):
    write_pums(offline, state="WY", seed=7, n=120)
    data = load_dataset("acs-income", states=["ca", "WY"])
    ref = pd.concat([reference(pums_frame()), reference(pums_frame(seed=7, n=120))], ignore_index=True)
    np.testing.assert_array_equal(data.y, ref.y)
    np.testing.assert_array_equal(data.features["AGEP"], ref.AGEP)
    assert "CA, WY 2018 1-Year" in data.description


def test_missing_file_is_one_line_naming_where_it_was_looked_for(offline, tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("acs-income", states="TX")
    text = str(info.value)
    assert "\n" not in text
    for fragment in ("psam_p48.csv", "TX, 2018 1-Year", str(tmp_path / "cache" / "acs" / "2018" / "1-Year"),
                     str(offline / "acs" / "2018" / "1-Year"),
                     "https://www2.census.gov/programs-surveys/acs/data/pums/2018/1-Year/csv_ptx.zip"):
        assert fragment in text


def test_mirror_argument_and_cache_take_precedence(offline, tmp_path, monkeypatch):
    monkeypatch.delenv(ds.MIRROR_ENV)
    other = tmp_path / "other-mirror"
    write_pums(other, seed=3)
    by_arg = load_dataset("acs-income", mirror=other)
    np.testing.assert_array_equal(by_arg.y, reference(pums_frame(seed=3)).y)
    cache = tmp_path / "cache"
    write_pums(cache, seed=5)  # a cached copy wins over the mirror
    cached = load_dataset("acs-income", mirror=offline)
    np.testing.assert_array_equal(cached.y, reference(pums_frame(seed=5)).y)


def test_download_goes_to_the_cache_atomically(offline, tmp_path, monkeypatch):
    monkeypatch.delenv(ds.MIRROR_ENV)
    calls = []

    def fake_download(url, datadir, remote_fname, file_name, delete_download=False):
        calls.append(url)
        pums_frame(seed=9).to_csv(Path(datadir) / file_name, index=False, float_format="%.0f")

    monkeypatch.setattr(load_acs, "download_and_extract", fake_download)
    data = load_dataset("acs-income")
    assert calls == ["https://www2.census.gov/programs-surveys/acs/data/pums/2018/1-Year/csv_pca.zip"]
    folder = tmp_path / "cache" / "acs" / "2018" / "1-Year"
    assert sorted(p.name for p in folder.iterdir()) == ["psam_p06.csv"]  # no staging folder left
    np.testing.assert_array_equal(data.y, reference(pums_frame(seed=9)).y)
    load_dataset("acs-income")  # now from the cache
    assert len(calls) == 1


def test_failed_download_is_one_line_and_caches_nothing(offline, tmp_path, monkeypatch):
    monkeypatch.delenv(ds.MIRROR_ENV)

    def unreachable(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(load_acs, "download_and_extract", unreachable)
    with pytest.raises(DataError) as info:
        load_dataset("acs-income")
    text = str(info.value)
    assert "\n" not in text
    assert "could not download the ACS PUMS file psam_p06.csv (CA, 2018 1-Year)" in text
    assert "ConnectionError: Name or service not known" in text
    assert "<mirror>/acs/2018/1-Year/ and set COLLECTIVE_FAIRNESS_MIRROR" in text
    assert list((tmp_path / "cache" / "acs" / "2018" / "1-Year").iterdir()) == []


def test_file_without_the_needed_columns(offline):
    path = offline / "acs" / "2018" / "1-Year" / "psam_p06.csv"
    pums_frame().drop(columns=["OCCP", "PWGTP"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"psam_p06.csv lacks column\(s\) OCCP, PWGTP"):
        load_dataset("acs-income")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"states": "XX"}, "option states='XX' is not allowed"),
        ({"states": []}, "option states=[] is not allowed"),
        ({"states": ["CA", "ca"]}, "allowed: distinct state codes"),
        ({"year": 2010}, "option year=2010 is not allowed"),
        ({"year": "2018"}, "option year='2018'"),
        ({"horizon": "3-Year"}, "allowed: 1-Year or 5-Year"),
        ({"survey": "household"}, "allowed: 'person'"),
        ({"n": 0}, "option n=0"),
        ({"n": True}, "option n=True"),
        ({"random_state": -1}, "option random_state=-1"),
    ],
)
def test_bad_options_are_config_errors(offline, options, fragment):
    with pytest.raises(ConfigError) as info:
        load_dataset("acs-income", **options)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_end_to_end_run(offline):
    changes = dict(
        seeds=(0,),
        data__dataset="acs-income",
        data__sensitive="sex",
        data__options={"states": ["CA"], "year": 2018, "horizon": "1-Year"},
        collective__methods=("rb-prob",),
        collective__alphas=(0.5,),
        collective__budgets=(0.5,),
        engine__n_jobs=1,
        engine__executor="serial",
    )
    if "validation" in {f.name for f in dataclasses.fields(CollectiveConfig)}:
        changes["collective__validation"] = 0.0  # no pilot rerun on a held-out share
    scenario = Scenario(name="acs").replace(**changes)
    scenario.check_data("acs")
    runs = engine.run_scenario(scenario)
    assert len(runs) == 2  # the base run and the one cell
    cell = runs[runs["method"] == "rb-prob"].iloc[0]
    assert cell["flips"] > 0 and np.isfinite(cell["eqod"]) and 0 <= cell["error"] <= 1


def test_shipped_config_loads():
    scenario = load_scenario(ROOT / "configs" / "acs-income.toml")
    assert scenario.data.dataset == "acs-income" and scenario.data.sensitive in acs.ACS_SENSITIVE
    assert set(scenario.data.options) <= set(acs.ACS_OPTIONS)

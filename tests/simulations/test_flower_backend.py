"""The flower backend gives the vectorised engine's flips, reported labels and metrics."""

import os

import numpy as np
import pandas as pd
import pytest

from agents.decision import relabel
from agents.errors import ConfigError
from agents.node import load_node_file
from agents.protocol import CellGrid
from server.server_app import RUN_CONFIG
from simulations import engine
from simulations.backends import get_backend
from simulations.flower.backend import BACKEND, run_seed
from simulations.flower.files import RoundWatch, prepare_run, results_frame
from simulations.flower.inprocess import run_in_process
from simulations.flower.processes import app_pyproject, config_args
from simulations.flower.session import FlowerSession
from simulations.scenario import Scenario
from simulations.state import build_world

# 86 toy rows -> 60 training users; every method, counts and fractions, empty and full budgets.
TOY = Scenario(name="toy-flower").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "rb-label", "rb-dist", "random", "oracle"),
    collective__alphas=(0.1, 0.3, 0.6), collective__budgets=(0.0, 0.2, 0.5, 1.0, 7), engine__n_jobs=1, collective__validation=0.0,
)


@pytest.fixture(scope="module")
def dataset():
    return engine.load_data(TOY, seed=0)


@pytest.fixture(scope="module")
def reference(dataset):
    return engine.run_seed(TOY, 0, dataset=dataset)


def assert_same_as_engine(frame, reference):
    cols = [c for c in reference.columns if c != "backend"]
    pd.testing.assert_frame_equal(frame[cols], reference[cols], check_exact=True)
    assert (frame["backend"] == "flower").all()


def assert_same_labels(run_dir, dataset):
    """The firm received exactly the labels the engine's rule produces, cell by cell."""
    world = build_world(TOY, dataset, 0)
    got = np.load(run_dir / "labels.npz")
    np.testing.assert_array_equal(got["user_ids"], world.user_ids)
    rows = [world.prepared.y_train]
    c = TOY.collective
    grid = CellGrid.of(c.methods, c.alphas, c.budgets)
    decided = engine.decisions(world, grid)
    rows += [relabel(world.prepared.y_train, decided.mask(cell.index)) for cell in grid]
    np.testing.assert_array_equal(got["labels"], np.array(rows))


@pytest.mark.parametrize("k", [10, 1])
def test_in_process_nodes_match_the_engine(k, dataset, reference, tmp_path):
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=k)
    assert files.n_nodes == 60 // k + 1  # user shards + the coordinator
    results = run_in_process(files, rounds=2)
    for round_ in (0, 1):
        assert_same_as_engine(results_frame(TOY, dataset, 0, results, round_=round_), reference)
    assert_same_labels(tmp_path, dataset)


def test_node_files_hold_only_their_users(dataset, tmp_path):
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=25)
    shards = [load_node_file(f) for f in files.node_files[:-1]]
    assert [s.user_ids.size for s in shards] == [25, 25, 10]
    ids = np.concatenate([s.user_ids for s in shards])
    assert np.unique(ids).size == 60
    coordinator = load_node_file(files.node_files[-1])
    assert not hasattr(coordinator, "user_ids") and coordinator.grid.methods == TOY.collective.methods


def test_run_config_arguments_are_quoted():
    assert config_args({"run-dir": "/a b/c", "rounds": 2, "x": 1.5, "ok": True}) == "run-dir='/a b/c' rounds=2 x=1.5 ok=true"
    with pytest.raises(ConfigError, match="single quote"):
        config_args({"run-dir": "/it's"})


def test_backends_are_found_by_name():
    assert get_backend("flower") is BACKEND and get_backend("vectorised") is engine.BACKEND
    assert not BACKEND.supports_comparison and engine.BACKEND.supports_comparison
    with pytest.raises(ValueError, match="allowed: vectorised, flower"):
        get_backend("magic")


def test_run_config_defaults_have_one_source():
    """pyproject.toml's Flower app config and the generated simulation app repeat the ServerApp's."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert project["tool"]["flwr"]["app"]["config"] == RUN_CONFIG
    assert tomllib.loads(app_pyproject())["tool"]["flwr"]["app"]["config"] == RUN_CONFIG


@pytest.mark.slow
def test_flower_simulation_on_ray_matches_the_engine(dataset, reference, tmp_path, capsys):
    """Real `flwr run` on a simulation SuperLink with Ray actors: 6 nodes of 10, then 60 nodes of 1."""
    with FlowerSession(TOY.flower, tmp_path / "flwr") as session:
        superlink = session.superlink
        # With the collective's pilot on: its val_* columns come from the same in-process study.
        piloted = TOY.replace(collective__validation=0.3)
        frame = run_seed(piloted.replace(flower__rounds=2, flower__agents_per_node=10), 0, dataset=dataset,
                         session=session, progress=True)
        said = capsys.readouterr().err
        assert "flower seed 0 round 1/2: 6/6 nodes reported" in said and "round 2/2" in said
        assert_same_as_engine(frame, engine.run_seed(piloted, 0, dataset=dataset))
        assert frame["val_eqod"].notna().all()
        assert (frame["round"] == 2).all() and (frame["reports_rejected"] == 0).all()
        runs = list((session.workdir / "runs").iterdir())
        assert len(runs) == 1 and (runs[0] / "results.json").exists() and not (runs[0] / "nodes").exists()
        files = prepare_run(TOY, 0, tmp_path / "k1", dataset=dataset, agents_per_node=1)
        results = session.run(files, rounds=1, timeout=120)
        assert results["connected_nodes"] == 61
        assert_same_as_engine(results_frame(TOY, dataset, 0, results), reference)
        assert_same_labels(tmp_path / "k1", dataset)
        home = session.home
    assert superlink.poll() is not None  # the SuperLink we started is gone
    assert (home / "config.toml").exists() and not (home / "local-superlink").exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(superlink.pid, 0)


def test_an_empty_candidate_pool_matches_the_engine_in_a_federation_too(dataset, tmp_path):
    tiny = TOY.replace(collective__methods=("rb-prob", "random"), collective__alphas=(0.001,))
    files = prepare_run(tiny, 0, tmp_path, dataset=dataset, agents_per_node=20)
    frame = results_frame(tiny, dataset, 0, run_in_process(files, rounds=1))
    assert_same_as_engine(frame, engine.run_seed(tiny, 0, dataset=dataset))
    assert (frame["flips"] == 0).all()


def test_round_lines_follow_results_json_as_it_grows(tmp_path):
    import json

    path = tmp_path / "results.json"
    record = {"round": 1, "messages": {"train.report": {"sent": 10, "ok": 9, "errors": 0, "timeouts": 1}},
              "nodes": {"reports_rejected": {"shape": 2}}, "seconds": {"coalition": 1.0, "round": 3.5}}
    lines = []
    watch = RoundWatch(path, 3, lines.append)
    watch.poll()  # no file yet
    path.write_text(json.dumps({"rounds": [record]}))
    watch.poll()
    watch.poll()  # unchanged: nothing new
    assert lines == ["round 1/3: 9/10 nodes reported, rejected: 2 shape, failed or timed out: 1; 3.5 s "
                     "(coalition 1.0 s)"]
    import os

    path.write_text(json.dumps({"rounds": [record, {**record, "round": 2}]}))
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))  # a new stamp even on a coarse clock
    watch.poll()
    assert len(lines) == 2 and lines[1].startswith("round 2/3")


def test_a_round_without_any_accepted_report_is_one_clear_error_in_the_table(dataset, tmp_path):
    from flwr.app import Message, RecordDict

    from agents.errors import DataError
    from agents.protocol import arrays_of, record_of

    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=20)

    def garbage_first_round(node_id, msg, reply):
        if msg.metadata.message_type == "evaluate.cells" and int(msg.content["round"]["round"]) == 1:
            arrays = arrays_of(reply.content["report"])
            return Message(RecordDict({"report": record_of(**{**arrays, "labels": arrays["labels"] + 5})}),
                           reply_to=msg)
        return reply

    results = run_in_process(files, rounds=2, tamper=garbage_first_round)
    with pytest.raises(DataError, match=r"round 1 of the federation accepted no report \(rejected: 3 labels") as info:
        results_frame(TOY, dataset, 0, results, round_=0)
    assert "\n" not in str(info.value)
    assert (results_frame(TOY, dataset, 0, results)["round"] == 2).all()  # the next round trained

"""Issue 8: the firm sees only what a real firm can (in-process grid, real ClientApps).

In a deployment (``mode = "deploy"``) the firm gets one reported label per user and
nothing else; the grid of counterfactual cells belongs to the experimenter's evaluator
(``mode = "evaluate"``), never to the firm. Which node reports for whom is fixed at
sign-up, from the ids each node declares.
"""

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from agents.errors import ConfigError
from agents.node import load_node_file
from agents.protocol import CellGrid, arrays_of, record_of, relabel
from server import server_app
from server.firm import Firm, make_estimator
from server.training import evaluate
from simulations import engine
from simulations.flower.files import prepare_run, results_frame, round_line
from simulations.flower.inprocess import run_in_process
from simulations.scenario import Scenario
from simulations.state import build_world

# 60 training users; one cell where members do flip. No warm start: the engine then fits
# every cell from scratch, as the firm of a deployment does, so the two agree bit for bit.
ONE = Scenario(name="toy-one-cell").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob",), collective__alphas=(0.6,), collective__budgets=(1.0,),
    engine__n_jobs=1, engine__warm_start=False, collective__validation=0.0,
)
GRID = ONE.replace(collective__methods=("rb-prob", "random"), collective__alphas=(0.3, 0.6),
                   collective__budgets=(0.5, 1.0))


@pytest.fixture(scope="module")
def dataset():
    return engine.load_data(ONE, seed=0)


@pytest.fixture(scope="module")
def world(dataset):
    return build_world(ONE, dataset, 0)


@pytest.fixture(scope="module")
def flipped(world):
    """Who the vectorised engine flips in the one cell (the collective's rule over everyone)."""
    c = ONE.collective
    mask = engine.decisions(world, CellGrid.of(c.methods, c.alphas, c.budgets)).mask(0)
    assert mask.sum() >= 3 and (world.prepared.y_train[mask] == 0).all()
    return world.user_ids[mask]


def _reply(msg, **records):
    return Message(RecordDict(records), reply_to=msg)


def _arrays(reply):
    return arrays_of(reply.content["report"])


def test_in_a_deployment_the_firm_never_receives_a_flipped_users_true_label(dataset, world, flipped, tmp_path,
                                                                            monkeypatch):
    files = prepare_run(ONE, 0, tmp_path, dataset=dataset, agents_per_node=7)  # 9 user nodes + coordinator
    received, trained, sent = [], [], []
    validate, train = server_app.validate_replies, server_app.train_cells

    def firm_intake(replies, **kw):  # everything the firm's intake is handed
        replies = list(replies)
        received.extend(replies)
        return validate(replies, **kw)

    def firm_training(estimator, X, y, cells, test, **kw):  # what the firm trains on
        trained.append((np.array(y, copy=True), list(cells)))
        return train(estimator, X, y, cells, test, **kw)

    monkeypatch.setattr(server_app, "validate_replies", firm_intake)
    monkeypatch.setattr(server_app, "train_cells", firm_training)

    def watch(node_id, msg, reply):
        sent.append(msg.metadata.message_type)
        return reply

    results = run_in_process(files, rounds=2, tamper=watch, mode="deploy")
    assert results["mode"] == "deploy" and results["role"] == "firm"
    assert "evaluate.cells" not in sent and sent.count("train.report") == 2 * 9  # the firm's wave, each round
    assert len(received) == 2 * 9
    y_true = dict(zip(world.user_ids.tolist(), world.prepared.y_train.tolist()))
    seen = {}
    for _, content in received:
        report = arrays_of(content["report"])
        assert report["labels"].shape == (1, report["user_ids"].size)  # one label per user, no second row
        for user, label in zip(report["user_ids"].tolist(), report["labels"][0].tolist()):
            seen.setdefault(user, set()).add(label)
    assert set(seen) == set(y_true)
    assert all(seen[u] == {1} for u in flipped.tolist())  # a flipped user's true 0 never reaches the firm
    assert all(seen[u] == {y_true[u]} for u in set(y_true) - set(flipped.tolist()))
    # It trains on exactly those labels, one vector, no counterfactual cells.
    reported = relabel(world.prepared.y_train, np.isin(world.user_ids, flipped))
    assert len(trained) == 2 and all(cells == [] for _, cells in trained)
    np.testing.assert_array_equal(trained[0][0], reported)

    # Its metrics are the engine's row for that cell, bit for bit; flips are unknown to it.
    reference = engine.run_seed(ONE, 0, dataset=dataset)
    cell = reference[reference["method"] != "base"].reset_index(drop=True)
    for round_ in (0, 1):
        frame = results_frame(ONE, dataset, 0, results, round_=round_)
        assert len(frame) == 1 and frame["flips"].isna().all()
        cols = [c for c in cell.columns if c not in ("backend", "flips")]
        pd.testing.assert_frame_equal(frame[cols], cell[cols], check_exact=True)
    r = results["rounds"][0]
    assert "flips" not in r and "flips_0_to_1" not in r and "flips_1_to_0" not in r
    minority = world.prepared.a_train == 1
    assert r["received"] == {"users": 60, "positive": int(reported.sum()), "by_group": {
        "0": {"users": int((~minority).sum()), "positive": int(reported[~minority].sum())},
        "1": {"users": int(minority.sum()), "positive": int(reported[minority].sum())}}}
    assert "the firm received 60 users" in round_line(r, 2)
    labels = np.load(tmp_path / "labels.npz")
    assert labels["labels"].shape == (1, 60)  # what the firm holds: the reports, not the true labels


def test_the_evaluator_sees_the_counterfactual_rows_and_the_firms_wave_is_not_sent(dataset, flipped, tmp_path):
    files = prepare_run(ONE, 0, tmp_path, dataset=dataset, agents_per_node=20)
    sent = []
    results = run_in_process(files, rounds=1, tamper=lambda n, msg, reply: sent.append(msg.metadata.message_type)
                             or reply)
    assert results["mode"] == "evaluate" and results["role"] == "evaluator"
    assert "train.report" not in sent and sent.count("evaluate.cells") == 3
    r = results["rounds"][0]
    assert r["flips"] == r["flips_0_to_1"] == [flipped.size] and r["flips_1_to_0"] == [0]
    reference = engine.run_seed(ONE, 0, dataset=dataset)
    cols = [c for c in reference.columns if c != "backend"]
    pd.testing.assert_frame_equal(results_frame(ONE, dataset, 0, results)[cols], reference[cols], check_exact=True)


def test_a_reported_one_to_zero_is_trained_as_zero_by_the_firm(dataset, world, flipped, tmp_path):
    files = prepare_run(ONE, 0, tmp_path, dataset=dataset, agents_per_node=10)
    y0 = load_node_file(files.node_files[0]).y
    ones = np.flatnonzero(y0 == 1)[:2]
    assert ones.size == 2

    def tamper(node_id, msg, reply):
        if msg.metadata.message_type != "train.report" or node_id != 1000:
            return reply
        r = _arrays(reply)
        labels = np.array(r["labels"], copy=True)
        labels[0, ones] = 0  # two users report their 1 as 0
        return _reply(msg, report=record_of(**{**r, "labels": labels}))

    honest = run_in_process(files, rounds=1, mode="deploy")["rounds"][0]
    (r,) = run_in_process(files, rounds=1, tamper=tamper, mode="deploy")["rounds"]
    labels = relabel(world.prepared.y_train, np.isin(world.user_ids, flipped))
    labels[ones] = 0  # node 0 holds the first 10 users, in the customers' order
    est = make_estimator("logistic-regression", {}, random_state=world.firm_seed)
    assert r["metrics"] == evaluate(Firm(est).fit(world.prepared.X_train, labels), world.test)
    assert r["metrics"] != honest["metrics"]
    assert r["received"]["positive"] == honest["received"]["positive"] - 2


def test_a_deployment_of_a_grid_of_cells_fails_at_start_in_one_line(dataset, tmp_path):
    files = prepare_run(GRID, 0, tmp_path, dataset=dataset, agents_per_node=30)
    with pytest.raises(ConfigError, match=r"mode = 'deploy' runs the one cell .* grid has 8 cells.*; allowed: ") as info:
        run_in_process(files, rounds=1, mode="deploy")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(ConfigError, match="allowed: evaluate, deploy"):
        server_app.RunSettings(tmp_path, mode="firm")
    with pytest.raises(ConfigError, match="allowed: evaluate, deploy"):
        server_app.RunSettings.from_run_config({"run-dir": str(tmp_path), "mode": "both"})


# ------------------------------------------------------------------ ids declared at sign-up


def _declare(extra_ids: dict, drop: tuple = ()):
    """A join tamper: node -> user ids it declares besides its own; nodes in ``drop`` declare none."""

    def change(node_id, msg, reply):
        if msg.metadata.message_type != "query.join" or "node" not in reply.content:
            return reply
        node = dict(reply.content["node"])
        if node_id in drop:
            node.pop("user_ids", None)
        elif node_id in extra_ids:
            node["user_ids"] = node["user_ids"] + [int(u) for u in extra_ids[node_id]]
            node["n_users"] = len(node["user_ids"])
        content = RecordDict({k: v for k, v in reply.content.items() if k != "node"})
        content["node"] = ConfigRecord(node)
        return Message(content, reply_to=msg)

    return change


@pytest.mark.parametrize("scenario, mode", [(GRID, "evaluate"), (ONE, "deploy")])
def test_an_id_declared_by_two_nodes_is_nobodys_and_every_other_id_stays_theirs(dataset, tmp_path, scenario, mode):
    files = prepare_run(scenario, 0, tmp_path, dataset=dataset, agents_per_node=5)  # 12 user nodes
    ids = {i: load_node_file(files.node_files[i]).user_ids for i in range(12)}
    contested = int(ids[3][0])
    own = load_node_file(files.node_files[3])
    declare = _declare({1002: [contested]})
    collection = "train.report" if mode == "deploy" else "evaluate.cells"

    def tamper(node_id, msg, reply):
        reply = declare(node_id, msg, reply)
        if msg.metadata.message_type == collection and node_id == 1002:  # it also reports that user
            r = _arrays(reply)
            return _reply(msg, report=record_of(
                user_ids=np.append(r["user_ids"], contested), X=np.vstack([r["X"], own.X[:1]]),
                a=np.append(r["a"], own.a[0]), labels=np.hstack([r["labels"], r["labels"][:, :1]])))
        return reply

    results = run_in_process(files, rounds=2, tamper=tamper, mode=mode)
    assert results["sign_up"] == {"nodes_declaring_ids": 12, "contested_ids": 1}
    for r in results["rounds"]:
        assert r["nodes"]["reports_rejected"] == {} and r["nodes"]["reports_accepted"] == 12
        assert r["nodes"]["users_dropped"] == {"contested": 2}  # from node 1002's report and node 1003's
        assert r["n_train"] == 59  # everyone but the contested user
    labels = np.load(tmp_path / "labels.npz")
    assert contested not in labels["user_ids"] and labels["user_ids"].size == 59


def test_a_claim_on_ids_a_node_did_not_declare_is_rejected_and_the_owner_keeps_them(dataset, tmp_path):
    """From the first round on: before sign-up ownership, both reports were dropped."""
    files = prepare_run(GRID, 0, tmp_path, dataset=dataset, agents_per_node=5)
    ids = {i: load_node_file(files.node_files[i]).user_ids for i in range(12)}

    def tamper(node_id, msg, reply):
        if msg.metadata.message_type == "evaluate.cells" and node_id == 1001:
            return _reply(msg, report=record_of(**{**_arrays(reply), "user_ids": ids[2]}))  # node 1002's users
        return reply

    (r,) = run_in_process(files, rounds=1, tamper=tamper)["rounds"]
    assert r["nodes"]["rejected_nodes"] == {"1001": "not-owner"}
    assert r["nodes"]["reports_accepted"] == 11 and r["n_train"] == 55  # node 1002 kept its users


def test_a_node_that_declares_no_ids_owns_those_of_its_first_accepted_report(dataset, tmp_path):
    files = prepare_run(GRID, 0, tmp_path, dataset=dataset, agents_per_node=5)
    ids = {i: load_node_file(files.node_files[i]).user_ids for i in range(12)}
    declare = _declare({}, drop=(1004,))

    def tamper(node_id, msg, reply):
        reply = declare(node_id, msg, reply)
        round_ = int(msg.content["round"]["round"])
        if msg.metadata.message_type == "evaluate.cells" and round_ == 2:
            if node_id == 1004:  # claims a declared user of node 1005 besides its own: not its
                r, other = _arrays(reply), load_node_file(files.node_files[5])
                return _reply(msg, report=record_of(
                    user_ids=np.append(r["user_ids"][1:], ids[5][0]), X=np.vstack([r["X"][1:], other.X[:1]]),
                    a=np.append(r["a"][1:], other.a[0]), labels=np.hstack([r["labels"][:, 1:], r["labels"][:, :1]])))
        return reply

    results = run_in_process(files, rounds=2, tamper=tamper)
    assert results["sign_up"] == {"nodes_declaring_ids": 11, "contested_ids": 0}
    first, second = results["rounds"]
    assert first["nodes"]["reports_rejected"] == {} and first["n_train"] == 60
    assert second["nodes"]["rejected_nodes"] == {"1004": "not-owner"} and second["n_train"] == 55

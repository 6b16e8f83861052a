"""The ClientApp and the coordinator: called with real Flower Messages, checked against the engine."""

import time

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from agents import client_app as ca
from agents.coalition import (
    cell_plan,
    coalition_thresholds,
    membership_cutoffs,
    scorers_from_signal,
    signal_digest,
    signal_from_reference,
)
from agents.decision import member_count, membership_cutoff
from simulations import engine
from simulations.scenario import Scenario

TOY = Scenario(name="toy").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "rb-label", "rb-dist", "random", "oracle"),
    collective__alphas=(0.1, 0.3, 0.6), collective__budgets=(0.0, 0.5, 1.0, 7), engine__n_jobs=1,
)


@pytest.fixture(scope="module")
def world():
    return engine.build_world(TOY, engine.load_data(TOY, seed=0), 0)


def _message(message_type: str, content: RecordDict, round_: int = 1) -> Message:
    content["round"] = ConfigRecord({"round": round_})
    md = Metadata(run_id=1, message_id=f"m{time.monotonic_ns()}", src_node_id=1, dst_node_id=7,
                  reply_to_message_id="", group_id=str(round_), created_at=time.time(), ttl=60.0,
                  message_type=message_type)
    return Message(content, metadata=md)


def _context(path, state=None) -> Context:
    return Context(run_id=1, node_id=7, node_config={"data-path": str(path)}, state=state or RecordDict(),
                   run_config={})


@pytest.fixture(scope="module")
def files(world, tmp_path_factory):
    """Node 0: the first 25 users; node 1: the coordinator."""
    d = tmp_path_factory.mktemp("nodes")
    p, streams = world.prepared, engine.seed_streams(0)
    from agents.decision import stream_key

    rows = slice(0, 25)
    users = ca.write_users_file(
        d / "users.npz", user_ids=world.user_ids[rows], X=p.X_train[rows], a=p.a_train[rows], y=p.y_train[rows],
        membership_key=stream_key(streams["membership"]), tie_key=stream_key(streams["ties"]),
        cf_proba=p.cf_proba_train[rows],
    )
    c = TOY.collective
    coord = ca.write_coordinator_file(d / "coord.npz", methods=c.methods, alphas=c.alphas, budgets=c.budgets, k=c.k,
                                      X_ref=p.X_train[world.reference], y_ref=p.y_train[world.reference])
    return users, coord


def test_node_file_round_trip_keeps_counts_and_fractions(files):
    coord = ca.load_node_file(files[1])
    assert coord.budgets == (0.0, 0.5, 1.0, 7)
    assert isinstance(coord.budgets[3], int) and isinstance(coord.budgets[0], float)
    users = ca.load_node_file(files[0])
    assert users.user_ids.dtype == np.int64 and users.X.shape[0] == 25


def test_join_sends_only_minority_membership_tickets(world, files):
    reply = ca.app(_message("query.join", RecordDict()), _context(files[0]))
    assert reply.metadata.message_type == "query.join"
    tickets = reply.content["join"]["member_tickets"].numpy()
    minority = world.prepared.a_train[:25] == 1
    np.testing.assert_array_equal(tickets, world.member_tickets[:25][minority])
    assert reply.content["node"]["role"] == "users"
    assert set(reply.content.array_records) == {"join"}  # nothing else leaves the node

    reply = ca.app(_message("query.join", RecordDict()), _context(files[1]))
    assert reply.content["node"]["role"] == "coordinator"


def test_cutoffs_match_the_engine(world):
    minority = world.minority
    tickets = world.member_tickets[minority]
    cutoffs = membership_cutoffs(tickets[::-1], TOY.collective.alphas)  # order does not matter
    for alpha, cutoff in zip(TOY.collective.alphas, cutoffs):
        assert cutoff == membership_cutoff(tickets, member_count(alpha, minority.sum()))


@pytest.mark.parametrize("method", ["rb-prob", "rb-label", "rb-dist", "random"])
def test_scorers_rebuilt_from_the_signal_score_like_the_engine(world, method):
    p = world.prepared
    signal = signal_from_reference([method], p.X_train[world.reference], p.y_train[world.reference], k=TOY.collective.k)
    if method == "rb-prob":  # parameters, not rows, travel for rb-prob
        assert "rb-prob/X" not in signal and signal["rb-prob/coef"].shape == (1, p.X_train.shape[1])
    scorer = scorers_from_signal([method], signal)[method]
    expected = engine.candidate_scores(world, method, k=TOY.collective.k)
    cand = np.flatnonzero(~np.isnan(expected))
    for chunk in (cand[:1], cand[:7], cand):  # one user, a shard or all: the same score
        np.testing.assert_array_equal(scorer.score_samples(p.X_train[chunk]), expected[chunk])


def test_signal_digest_changes_with_content(world):
    p = world.prepared
    s1 = signal_from_reference(["rb-label"], p.X_train[world.reference], p.y_train[world.reference])
    s2 = dict(s1, k=np.array([3]))
    assert signal_digest(s1) == signal_digest(dict(s1)) != signal_digest(s2)


def test_full_protocol_on_one_node_gives_the_engine_flips(world, files):
    """join -> cutoffs -> scores -> thresholds -> report, each a real ClientApp call."""
    users_ctx, coord_ctx = _context(files[0]), _context(files[1])
    joined = ca.app(_message("query.join", RecordDict()), users_ctx)
    ask = RecordDict({"stage": ConfigRecord({"stage": "cutoffs"}), "member-0": joined.content["join"]})
    signal = ca.app(_message("query.coordinate", ask), coord_ctx)
    scored = ca.app(_message("query.scores", RecordDict(dict(signal.content))), users_ctx)
    ask = RecordDict({"stage": ConfigRecord({"stage": "thresholds"}), "member-0": scored.content["candidates"]})
    answer = ca.app(_message("query.coordinate", ask), coord_ctx)
    content = RecordDict({k: v for k, v in answer.content.items() if k != "summary"})
    report = ca.app(_message("train.report", content), users_ctx).content["report"]
    labels = report["labels"].numpy()
    plan = cell_plan(*(getattr(TOY.collective, k) for k in ("methods", "alphas", "budgets")))
    assert labels.shape == (plan.n_cells + 1, 25)
    np.testing.assert_array_equal(report["user_ids"].numpy(), world.user_ids[:25])

    # The same 25 users decided by the engine's code, as if they were the whole training set.
    p = world.prepared
    sub = engine.World(world.seed, p, world.user_ids, world.member_tickets, world.tie_tickets, world.reference,
                       world.firm_seed)
    c = 0
    for method in TOY.collective.methods:
        scores = engine.candidate_scores(sub, method)
        keep = np.full(p.y_train.size, False)
        keep[:25] = True
        scores[~keep] = np.nan
        for cell in _cells_on_subset(sub, method, scores, keep):
            np.testing.assert_array_equal(labels[c + 1], np.where(cell.flips[:25], 1, p.y_train[:25]))
            c += 1


def _cells_on_subset(world, method, scores, keep):
    """The engine's rule restricted to the users in ``keep`` (other users are not in the collective)."""
    p = world.prepared
    minority = world.minority & keep
    n_minority = int(minority.sum())
    plan = cell_plan(TOY.collective.methods, TOY.collective.alphas, TOY.collective.budgets)
    from agents.decision import budget_count, coalition_threshold, decide

    for alpha in plan.alphas:
        cutoff = membership_cutoff(world.member_tickets[minority], member_count(alpha, n_minority))
        pool = minority & (world.member_tickets < cutoff) & (p.y_train == 0)
        idx = np.flatnonzero(pool)
        for budget in plan.budgets:
            t = coalition_threshold(scores[idx], world.tie_tickets[idx], budget_count(budget, idx.size))
            yield engine.Cell(method, alpha, budget, 0, idx.size, 0, t.score,
                              decide(scores, world.tie_tickets, t, eligible=pool))


def test_thresholds_from_member_payloads_equal_engine_thresholds(world):
    p = world.prepared
    plan = cell_plan(TOY.collective.methods[:2], TOY.collective.alphas, TOY.collective.budgets)
    minority = world.minority
    cutoffs = membership_cutoffs(world.member_tickets[minority], plan.alphas)
    cand = np.flatnonzero(minority & (p.y_train == 0) & (world.member_tickets < cutoffs.max()))
    scores = np.vstack([engine.candidate_scores(world, m)[cand] for m in plan.methods])
    t = coalition_thresholds(plan, cutoffs, [0] * 3, world.member_tickets[cand], world.tie_tickets[cand], scores)
    expected = [cell for m in plan.methods
                for cell in engine.plan_cells(world, m, engine.candidate_scores(world, m), plan.alphas, plan.budgets)]
    np.testing.assert_array_equal(t.score, [cell.threshold for cell in expected])
    np.testing.assert_array_equal(t.m, [cell.m for cell in expected])
    np.testing.assert_array_equal(t.pool_size, [cell.pool_size for cell in expected])


def test_errors_are_raised_not_hidden(files):
    with pytest.raises(ValueError, match="No query function registered"):
        ca.app(_message("query.nonsense", RecordDict()), _context(files[0]))
    with pytest.raises(ValueError, match="not the coordinator"):
        ca.app(_message("query.coordinate", RecordDict({"stage": ConfigRecord({"stage": "cutoffs"})})),
               _context(files[0]))
    with pytest.raises(ValueError, match="unknown coordinator stage"):
        ca.app(_message("query.coordinate", RecordDict({"stage": ConfigRecord({"stage": "x"})})), _context(files[1]))
    ctx = Context(run_id=1, node_id=7, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    with pytest.raises(ValueError, match="node-data-dir"):
        ca.app(_message("query.join", RecordDict()), ctx)


def test_report_before_scores_is_refused(files):
    content = RecordDict({
        "thresholds": ca.record_of(cutoffs=np.ones(3), score=np.zeros(2), ticket=np.zeros(2)),
        "plan": ConfigRecord({"methods": ["rb-prob"], "n_alphas": 1, "n_budgets": 2}),
    })
    with pytest.raises(ValueError, match="before query.scores"):
        ca.app(_message("train.report", content), _context(files[0]))


def test_scores_are_remembered_and_the_signal_is_asked_for_only_when_missing(files):
    users_ctx, coord_ctx = _context(files[0]), _context(files[1])
    joined = ca.app(_message("query.join", RecordDict()), users_ctx)
    ask = RecordDict({"stage": ConfigRecord({"stage": "cutoffs"}), "member-0": joined.content["join"]})
    signal = ca.app(_message("query.coordinate", ask), coord_ctx).content
    light = lambda: RecordDict({k: v for k, v in signal.items() if k != "signal"})
    fresh = _context(files[0])
    assert "need" in ca.app(_message("query.scores", light()), fresh).content  # never saw the signal
    first = ca.app(_message("query.scores", RecordDict(dict(signal))), fresh).content["candidates"]
    again = ca.app(_message("query.scores", light(), round_=2), fresh).content["candidates"]
    np.testing.assert_array_equal(first["scores"].numpy(), again["scores"].numpy())
    assert int(fresh.state["candidates-meta"]["round"]) == 2

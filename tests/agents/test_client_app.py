"""The ClientApp and the coordinator: called with real Flower Messages, checked against the engine."""

import time

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from agents import client_app as ca
from agents.decision import budget_count, coalition_threshold, decide, member_count, membership_cutoff
from agents.knowledge import knowledge_digest, knowledge_from_reference, scorers_from_knowledge
from agents.node import load_node_file, write_coordinator_file, write_users_file
from agents.protocol import CellGrid, record_of
from agents.rule import membership_cutoffs, publish
from simulations import engine
from simulations.scenario import Scenario
from simulations.state import build_world

TOY = Scenario(name="toy").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "rb-label", "rb-dist", "random", "oracle"),
    collective__alphas=(0.1, 0.3, 0.6), collective__budgets=(0.0, 0.5, 1.0, 7), engine__n_jobs=1,
)


@pytest.fixture(scope="module")
def world():
    return build_world(TOY, engine.load_data(TOY, seed=0), 0)


GRID = CellGrid.of(TOY.collective.methods, TOY.collective.alphas, TOY.collective.budgets)


def _candidate_scores(world, method, keep=None):
    """Scores of every minority user with y = 0 (NaN for everyone else), by ``method``."""
    p = world.prepared
    users = np.flatnonzero(world.minority & (p.y_train == 0) & (True if keep is None else keep))
    out = np.full(p.y_train.size, np.nan)
    out[users] = world.scores(method, users, TOY.collective.scorer_params()[method])
    return out


def _message(message_type: str, content: RecordDict, round_: int = 1) -> Message:
    content["round"] = ConfigRecord({"round": round_})
    md = Metadata(run_id=1, message_id=f"m{time.monotonic_ns()}", src_node_id=1, dst_node_id=7,
                  reply_to_message_id="", group_id=str(round_), created_at=time.time(), ttl=60.0,
                  message_type=message_type)
    return Message(content, metadata=md)


def _context(path, state=None, *, evaluator=True) -> Context:
    # A node started with its own data-path answers the evaluator only with its owner's consent.
    return Context(run_id=1, node_id=7, node_config={"data-path": str(path), "evaluator": evaluator},
                   state=state or RecordDict(), run_config={})


@pytest.fixture(scope="module")
def files(world, tmp_path_factory):
    """Node 0: the first 25 users; node 1: the coordinator."""
    d = tmp_path_factory.mktemp("nodes")
    p = world.prepared
    rows = slice(0, 25)
    users = write_users_file(
        d / "users.npz", user_ids=world.user_ids[rows], X=p.X_train[rows], a=p.a_train[rows], y=p.y_train[rows],
        membership_key=world.membership_key, tie_key=world.tie_key, cf_proba=p.cf_proba_train[rows],
    )
    coord = write_coordinator_file(d / "coord.npz", grid=GRID, params=TOY.collective.scorer_params(),
                                   X_ref=p.X_train[world.reference], y_ref=p.y_train[world.reference],
                                   membership_key=world.membership_key, tie_key=world.tie_key, token="secret")
    return users, coord


def test_node_file_round_trip_keeps_counts_and_fractions(files):
    coord = load_node_file(files[1])
    assert coord.grid == GRID and coord.grid.budgets == (0.0, 0.5, 1.0, 7)
    assert isinstance(coord.grid.budgets[3], int) and isinstance(coord.grid.budgets[0], float)
    users = load_node_file(files[0])
    assert users.user_ids.dtype == np.int64 and users.X.shape[0] == 25


def test_join_sends_only_minority_membership_tickets(world, files):
    reply = ca.app(_message("query.join", RecordDict()), _context(files[0]))
    assert reply.metadata.message_type == "query.join"
    tickets = reply.content["join"]["member_tickets"].numpy()
    minority = world.prepared.a_train[:25] == 1
    np.testing.assert_array_equal(tickets, world.member_tickets[:25][minority])
    np.testing.assert_array_equal(reply.content["join"]["user_ids"].numpy(), world.user_ids[:25][minority])
    assert reply.content["node"]["role"] == "users" and reply.content["node"]["n_users"] == 25
    assert reply.content["node"]["user_ids"] == world.user_ids[:25].tolist()  # the firm's customers it reports for
    assert set(reply.content.array_records) == {"join"}  # nothing else leaves the node

    reply = ca.app(_message("query.join", RecordDict()), _context(files[1]))
    assert reply.content["node"]["role"] == "coordinator" and reply.content["node"]["token"] == "secret"
    coord = load_node_file(files[1])
    assert (coord.membership_key, coord.tie_key) == (world.membership_key, world.tie_key)


def test_cutoffs_match_the_engine(world):
    minority = world.minority
    tickets = world.member_tickets[minority]
    cutoffs, n_members = membership_cutoffs(tickets[::-1], TOY.collective.alphas)  # order does not matter
    for alpha, cutoff in zip(TOY.collective.alphas, cutoffs):
        assert cutoff == membership_cutoff(tickets, member_count(alpha, minority.sum()))
    assert list(n_members) == [member_count(alpha, minority.sum()) for alpha in TOY.collective.alphas]


@pytest.mark.parametrize("method", ["rb-prob", "rb-label", "rb-dist", "random"])
def test_scorers_rebuilt_from_the_knowledge_score_like_the_engine(world, method):
    p = world.prepared
    knowledge = knowledge_from_reference([method], p.X_train[world.reference], p.y_train[world.reference],
                                         params=TOY.collective.scorer_params())
    if method == "rb-prob":  # parameters, not rows, travel for rb-prob
        assert "rb-prob/X" not in knowledge and knowledge["rb-prob/coef"].shape == (1, p.X_train.shape[1])
    scorer = scorers_from_knowledge([method], knowledge)[method]
    expected = _candidate_scores(world, method)
    cand = np.flatnonzero(~np.isnan(expected))
    for chunk in (cand[:1], cand[:7], cand):  # one user, a shard or all: the same score
        np.testing.assert_array_equal(scorer.score_samples(p.X_train[chunk]), expected[chunk])


def test_knowledge_digest_changes_with_content(world):
    p = world.prepared
    s1 = knowledge_from_reference(["rb-label"], p.X_train[world.reference], p.y_train[world.reference])
    s2 = dict(s1, **{"rb-label/param/k": np.array([3])})
    assert knowledge_digest(s1) == knowledge_digest(dict(s1)) != knowledge_digest(s2)


def test_full_protocol_on_one_node_gives_the_engine_flips(world, files):
    """join -> cutoffs -> scores -> thresholds -> report, each a real ClientApp call."""
    users_ctx, coord_ctx = _context(files[0]), _context(files[1])
    joined = ca.app(_message("query.join", RecordDict()), users_ctx)
    ask = RecordDict({"stage": ConfigRecord({"stage": "cutoffs"}), "member-0": joined.content["join"],
                      "registered": ConfigRecord({"0": 25})})
    signal = ca.app(_message("query.coordinate", ask), coord_ctx)
    scored = ca.app(_message("query.scores", RecordDict(dict(signal.content))), users_ctx)
    ask = RecordDict({"stage": ConfigRecord({"stage": "thresholds"}), "member-0": scored.content["candidates"]})
    answer = ca.app(_message("query.coordinate", ask), coord_ctx)
    content = RecordDict({k: v for k, v in answer.content.items() if k != "summary"})
    report = ca.app(_message("evaluate.cells", content), users_ctx).content["report"]
    labels = report["labels"].numpy()
    assert labels.shape == (len(GRID) + 1, 25)
    np.testing.assert_array_equal(labels[0], world.prepared.y_train[:25])  # row 0: the true labels
    np.testing.assert_array_equal(report["user_ids"].numpy(), world.user_ids[:25])

    # The same 25 users decided by a plain loop over the rule's primitives, as if
    # they were the whole training set.
    p = world.prepared
    keep = np.zeros(p.y_train.size, dtype=bool)
    keep[:25] = True
    for c, (cell, flips, _) in enumerate(_reference_cells(world, GRID, keep)):
        np.testing.assert_array_equal(labels[c + 1], np.where(flips[:25], 1, p.y_train[:25]))


def _reference_cells(world, grid, keep):
    """The collective's rule as a plain loop over ``agents.decision``'s primitives, restricted
    to the users in ``keep``: yields (cell, flips mask, (pool size, M, threshold score))."""
    p = world.prepared
    minority = world.minority & keep
    n_minority = int(minority.sum())
    for cell in grid:
        scores = _candidate_scores(world, cell.method, keep)
        cutoff = membership_cutoff(world.member_tickets[minority], member_count(cell.alpha, n_minority))
        pool = minority & (world.member_tickets < cutoff) & (p.y_train == 0)
        idx = np.flatnonzero(pool)
        m = budget_count(cell.budget, idx.size)
        t = coalition_threshold(scores[idx], world.tie_tickets[idx], m)
        yield cell, decide(scores, world.tie_tickets, t, eligible=pool), (idx.size, m, t.score)


def test_thresholds_from_member_payloads_equal_the_reference_rule(world):
    p = world.prepared
    grid = CellGrid.of(TOY.collective.methods[:2], TOY.collective.alphas, TOY.collective.budgets)
    cutoffs, n_members = membership_cutoffs(world.member_tickets[world.minority], grid.alphas)
    cand = np.flatnonzero(world.minority & (p.y_train == 0) & (world.member_tickets < cutoffs.max()))
    scores = np.vstack([_candidate_scores(world, m)[cand] for m in grid.methods])
    t = publish(grid, cutoffs, n_members, world.member_tickets[cand], world.tie_tickets[cand], scores)
    expected = [summary for _, _, summary in _reference_cells(world, grid, np.ones(p.y_train.size, dtype=bool))]
    np.testing.assert_array_equal(t.pool_size, [e[0] for e in expected])
    np.testing.assert_array_equal(t.m, [e[1] for e in expected])
    np.testing.assert_array_equal(t.score, [e[2] for e in expected])


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
        "thresholds": record_of(cutoffs=np.ones(1), score=np.zeros(2), ticket=np.zeros(2)),
        "plan": ConfigRecord(CellGrid.of(["rb-prob"], [0.5], [0.1, 0.2]).to_config()),
    })
    with pytest.raises(ValueError, match="before query.scores"):
        ca.app(_message("evaluate.cells", content), _context(files[0]))


def test_the_firm_gets_one_label_per_user_and_only_from_a_one_cell_plan(world, files):
    """train.report: the deployed cell's label and nothing else; a grid of cells is refused."""
    grid = CellGrid.of(["rb-prob"], [0.6], [1.0])
    p = world.prepared
    users_ctx, coord_ctx = _context(files[0]), _context(files[1])
    joined = ca.app(_message("query.join", RecordDict()), users_ctx)
    coord = load_node_file(files[1])
    one = write_coordinator_file(files[1].parent / "one-cell.npz", grid=grid, params=TOY.collective.scorer_params(),
                                 X_ref=coord.X_ref, y_ref=coord.y_ref, membership_key=world.membership_key,
                                 tie_key=world.tie_key, token="secret")
    coord_ctx = _context(one)
    ask = RecordDict({"stage": ConfigRecord({"stage": "cutoffs"}), "member-0": joined.content["join"],
                      "registered": ConfigRecord({"0": 25})})
    signal = ca.app(_message("query.coordinate", ask), coord_ctx)
    scored = ca.app(_message("query.scores", RecordDict(dict(signal.content))), users_ctx)
    ask = RecordDict({"stage": ConfigRecord({"stage": "thresholds"}), "member-0": scored.content["candidates"]})
    answer = ca.app(_message("query.coordinate", ask), coord_ctx)
    content = lambda: RecordDict({k: v for k, v in answer.content.items() if k != "summary"})  # noqa: E731
    report = ca.app(_message("train.report", content()), users_ctx).content["report"]
    rows = ca.app(_message("evaluate.cells", content()), users_ctx).content["report"]["labels"].numpy()
    labels = report["labels"].numpy()
    assert labels.shape == (1, 25)  # one label per user, no row of true labels
    np.testing.assert_array_equal(labels[0], rows[1])
    flipped = rows[1] != p.y_train[:25]
    assert flipped.any() and (labels[0][flipped] == 1).all()  # a flipped user reports 1, only 1
    several = RecordDict({**dict(content()), "plan": ConfigRecord(GRID.to_config())})
    with pytest.raises(ValueError, match=f"plan has {len(GRID)} cells; allowed: exactly one"):
        ca.app(_message("train.report", several), users_ctx)


def test_scores_are_remembered_and_the_knowledge_is_asked_for_only_when_missing(files):
    users_ctx, coord_ctx = _context(files[0]), _context(files[1])
    joined = ca.app(_message("query.join", RecordDict()), users_ctx)
    ask = RecordDict({"stage": ConfigRecord({"stage": "cutoffs"}), "member-0": joined.content["join"],
                      "registered": ConfigRecord({"0": 25})})
    signal = ca.app(_message("query.coordinate", ask), coord_ctx).content
    light = lambda: RecordDict({k: v for k, v in signal.items() if k != "knowledge"})
    fresh = _context(files[0])
    assert "need" in ca.app(_message("query.scores", light()), fresh).content  # never saw the knowledge
    first = ca.app(_message("query.scores", RecordDict(dict(signal))), fresh).content["candidates"]
    again = ca.app(_message("query.scores", light(), round_=2), fresh).content["candidates"]
    np.testing.assert_array_equal(first["scores"].numpy(), again["scores"].numpy())
    assert int(fresh.state["candidates-meta"]["round"]) == 2


def test_a_node_with_its_own_data_file_answers_the_evaluator_only_with_consent(files):
    """evaluate.cells carries true labels: a node started with its own data-path (a device)
    refuses it unless its node config says evaluator=true; simulated nodes (found by
    partition-id in the experimenter's node-data-dir) answer."""
    assert not ca.answers_evaluator(_context(files[0], evaluator=False))
    assert not ca.answers_evaluator(Context(run_id=1, node_id=7, node_config={"data-path": "x"}, state=RecordDict(),
                                            run_config={}))
    assert ca.answers_evaluator(_context(files[0], evaluator=True))
    assert ca.answers_evaluator(_context(files[0], evaluator="true"))
    assert ca.answers_evaluator(Context(run_id=1, node_id=7, node_config={"partition-id": 0}, state=RecordDict(),
                                        run_config={}))
    with pytest.raises(PermissionError, match="does not answer the experimenter's evaluator"):
        ca.app(_message("evaluate.cells", RecordDict()), _context(files[0], evaluator=False))

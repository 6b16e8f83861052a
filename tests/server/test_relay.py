"""One node cannot break the collective: the relay and the coordinator against hostile nodes (in process)."""

import numpy as np
import pytest
from flwr.app import ConfigRecord

from agents import sealing
from agents.decision import user_tickets
from agents.node import load_node_file
from simulations import engine
from simulations.flower.files import prepare_run
from simulations.flower.inprocess import run_in_process
from simulations.scenario import Scenario

TOY = Scenario(name="toy").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "random"), collective__alphas=(0.3, 0.6), collective__budgets=(0.5, 1.0),
    engine__n_jobs=1, collective__validation=0.0,
)


@pytest.fixture(scope="module")
def dataset():
    return engine.load_data(TOY, seed=0)


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    """One seed's files at K = 1 (60 user nodes, then the coordinator) and its honest results."""
    files = prepare_run(TOY, 0, tmp_path_factory.mktemp("run"), dataset=dataset, agents_per_node=1)
    return files, run_in_process(files)["rounds"][0]


def _node_id(files, i):
    return 1000 + i  # run_in_process numbers nodes 1000 + partition


def _first(files, keep):
    """The first user node whose data satisfies ``keep(node)``: (node id, node data)."""
    for i, path in enumerate(files.node_files[:-1]):
        node = load_node_file(path)
        if keep(node):
            return _node_id(files, i), node
    raise AssertionError("no such node")


def _candidate_node(files):
    return _first(files, lambda n: bool(n.a[0] == 1 and n.y[0] == 0 and n.member_tickets[0] < 0.3))


def _hook(node_id, message_type, change):
    """A tamper hook changing ``node_id``'s replies of ``message_type`` with ``change(content)``."""

    def tamper(nid, msg, reply):
        if nid == node_id and msg.metadata.message_type == message_type and not reply.has_error():
            change(reply.content)
        return reply

    return tamper


def _payload_hook(files, node_id, message_type, name, change):
    """A hostile node: its payload ``name`` of ``message_type``, changed by ``change(arrays)``
    before it is sealed (here: opened with the coordinator's key, changed, sealed again)."""
    users, coord = load_node_file(files.node_files[0]), load_node_file(files.node_files[-1])

    def tamper(nid, msg, reply):
        if nid == node_id and msg.metadata.message_type == message_type and not reply.has_error():
            ctx = sealing.context(message_type, run=users.coordinator_digest, role="users",
                                  round_=int(msg.content["round"]["round"]), node=nid)
            blob = sealing.blob_of(reply.content[name])
            arrays = sealing.unpadded(sealing.unpack(sealing.open_from(coord.private_key, blob, ctx)))
            change(arrays)
            slots = max(v.shape[-1] for v in arrays.values())
            reply.content[name] = sealing.sealed_record(
                sealing.seal_to(users.coordinator_key, sealing.pack(sealing.padded(arrays, slots)), ctx))
        return reply

    return tamper


def assert_same_outcome(got, honest):
    """Same members, pools, M, thresholds, flips and metrics as the honest run."""
    strip = lambda c: {k: v for k, v in c.items() if k != "dropped"}  # noqa: E731
    assert strip(got["coalition"]) == strip(honest["coalition"])
    assert got["flips"] == honest["flips"] and got["metrics"] == honest["metrics"]
    assert got["n_train"] == honest["n_train"]


def test_honest_run_drops_nothing_and_flips(run):
    _, honest = run
    assert "dropped" not in honest["coalition"]
    assert sum(honest["flips"]) > 0 and honest["errors"] == []


def test_two_thousand_forged_membership_tickets_are_dropped(run):
    files, honest = run
    node_id, _ = _first(files, lambda n: bool(n.a[0] == 1))
    rng = np.random.default_rng(1)

    def forge(join):  # 2,000 invented members with tickets low enough to be in every collective
        join["user_ids"] = np.concatenate([join["user_ids"], 10_000 + np.arange(2000)])
        join["member_tickets"] = np.concatenate([join["member_tickets"], rng.uniform(0, 1e-3, 2000)])

    rounds = run_in_process(files, rounds=2, tamper=_payload_hook(files, node_id, "query.join", "join", forge))
    for got in rounds["rounds"]:  # the second round reuses the verified members and says so again
        assert got["coalition"]["dropped"] == {"join": {"ticket": 2000}}
        assert_same_outcome(got, honest)


def test_more_claims_than_users_are_dropped(run):
    """Tickets computed correctly (every user holds the keys) for ids the node does not have."""
    files, honest = run
    node_id, node = _first(files, lambda n: bool(n.a[0] == 1))

    def claim(join):
        fake = 10_000 + np.arange(50)
        join["user_ids"] = np.concatenate([join["user_ids"], fake])
        join["member_tickets"] = np.concatenate([join["member_tickets"], user_tickets(fake, node.membership_key)])

    got = run_in_process(files, tamper=_payload_hook(files, node_id, "query.join", "join", claim))["rounds"][0]
    assert got["coalition"]["dropped"] == {"join": {"over-claim": 50}}  # the node registered one user
    assert_same_outcome(got, honest)


def test_claims_of_other_nodes_users_count_once_and_unjoined_candidates_are_dropped(run):
    files, honest = run
    victim_id, victim = _candidate_node(files)
    thief_id = 1000 if victim_id != 1000 else 1001  # an earlier node id: the first claimant

    def steal_score(c):  # the thief also sends the victim as a candidate with a top score
        c["user_ids"] = np.concatenate([c["user_ids"], victim.user_ids])
        c["member_tickets"] = np.concatenate([c["member_tickets"], victim.member_tickets])
        c["tie_tickets"] = np.concatenate([c["tie_tickets"], victim.tie_tickets])
        c["scores"] = np.concatenate([c["scores"], np.full((c["scores"].shape[0], 1), 1e9)], axis=1)

    got = run_in_process(files, tamper=_payload_hook(files, thief_id, "query.scores", "candidates", steal_score))
    got = got["rounds"][0]
    assert got["coalition"]["dropped"] == {"scores": {"not-joined": 1}}
    assert_same_outcome(got, honest)


@pytest.mark.parametrize("bad", [np.inf, np.nan, -np.inf])
def test_non_finite_scores_drop_that_candidate_only(run, bad):
    files, honest = run
    node_id, _ = _candidate_node(files)

    def poison(c):
        c["scores"][0, :] = bad

    def withhold(c):  # the reference: the same node sends no candidate at all
        for k in ("user_ids", "member_tickets", "tie_tickets"):
            c[k] = c[k][:0]
        c["scores"] = c["scores"][:, :0]

    got = run_in_process(files, tamper=_payload_hook(files, node_id, "query.scores", "candidates", poison))
    ref = run_in_process(files, tamper=_payload_hook(files, node_id, "query.scores", "candidates", withhold))
    got, ref = got["rounds"][0], ref["rounds"][0]
    assert got["coalition"]["dropped"] == {"scores": {"non-finite": 1}}
    assert_same_outcome(got, ref)
    # Every cell still has a reachable threshold: budgets are not zeroed by one node.
    assert all(np.isfinite(got["coalition"]["score"])) and all(f > 0 for f in got["flips"])
    assert sum(abs(a - b) for a, b in zip(got["flips"], honest["flips"])) <= len(got["flips"])


def test_a_user_node_claiming_the_coordinators_role_is_ignored(run):
    files, honest = run
    node_id, _ = _first(files, lambda n: bool(n.a[0] == 1))

    def claim(content):
        content["node"] = ConfigRecord({"role": "coordinator", "n_users": 1, "token": "a guess"})

    got = run_in_process(files, tamper=_hook(node_id, "query.join", claim))["rounds"][0]
    assert got["coalition"]["dropped"] == {"relay": {"impostor": 1}}
    assert any("claimed the coordinator's role" in e for e in got["errors"])
    assert_same_outcome(got, honest)

    def claim_only(content):  # a claimant with no users of its own is left out
        claim(content)
        del content["join"]

    got = run_in_process(files, tamper=_hook(node_id, "query.join", claim_only))["rounds"][0]
    assert got["coalition"]["dropped"] == {"relay": {"impostor": 1}}
    assert got["n_train"] == honest["n_train"] - 1


def test_stolen_digest_vote_needs_a_majority(run):
    """Only the digest most user nodes name counts: one node naming its own identity changes nothing."""
    files, honest = run
    node_id, _ = _first(files, lambda n: bool(n.a[0] == 0))
    from agents.protocol import token_digest

    def lie(content):
        content["node"] = ConfigRecord({"role": "users", "n_users": 1, "coordinator": token_digest("mine")})

    got = run_in_process(files, tamper=_hook(node_id, "query.join", lie))["rounds"][0]
    assert_same_outcome(got, honest) and "dropped" not in got["coalition"]


def test_odd_join_replies_are_counted_not_fatal(run):
    """A huge user count and a join sent as the wrong record type: the round completes."""
    files, honest = run
    node_id, _ = _first(files, lambda n: bool(n.a[0] == 1 and n.y[0] == 1))  # a minority user, no candidate

    def odd(content):
        content["node"] = ConfigRecord({"role": "users", "n_users": 10**30, "coordinator": ""})
        content["join"] = ConfigRecord({"user_ids": [1, 2]})

    got = run_in_process(files, tamper=_hook(node_id, "query.join", odd))["rounds"][0]
    assert got["coalition"]["dropped"] == {"join": {"malformed": 1}}
    assert got["n_train"] == honest["n_train"] and sum(got["flips"]) > 0


def test_odd_identities_do_not_break_the_round(run):
    """Non-ASCII or non-string identities from every user node: no coordinator, the round completes."""
    files, _ = run

    def tamper(nid, msg, reply):
        if msg.metadata.message_type == "query.join" and "node" in reply.content:
            node = dict(reply.content["node"])
            if node.get("role") == "users":
                node["coordinator"] = "é" * 64 if nid != 1000 else 12
            else:
                node["token"] = 12
            reply.content["node"] = ConfigRecord(node)
        return reply

    got = run_in_process(files, tamper=tamper)["rounds"][0]
    assert got["coalition"] == {} and sum(got["flips"]) == 0 and got["n_train"] == 60


def test_without_identities_two_claimants_mean_nobody_relabels(run):
    """Older node files (no digest): the role is accepted only from a single claimant."""
    files, _ = run
    impostor, _ = _first(files, lambda n: True)

    def tamper(nid, msg, reply):
        if msg.metadata.message_type == "query.join" and "node" in reply.content:
            node = dict(reply.content["node"])
            node.pop("coordinator", None)
            if nid == impostor:
                node["role"] = "coordinator"
            reply.content["node"] = ConfigRecord(node)
        return reply

    got = run_in_process(files, tamper=tamper)["rounds"][0]
    assert got["coalition"] == {} and sum(got["flips"]) == 0
    assert any("2 coordinators answered" in e for e in got["errors"])

"""Many rounds (simulations.dynamics): the one-shot experiment as round 1, a retraining
firm, participation rules, coordination modes and imperfect members."""

import math

import numpy as np
import pandas as pd
import pytest
import tomli_w

from agents.participation import granovetter_fixed_point
from simulations import dynamics, engine
from simulations.cli import main
from simulations.dynamics import DYNAMICS_COLUMNS, CollectiveDynamics
from simulations.scenario import Scenario
from simulations.state import initial_state

TOY = {
    "name": "toy-dynamics",
    "seeds": [0, 1],
    "data": {"dataset": "toy", "options": {"n": 1500}},
    "collective": {"methods": ["rb-prob", "random"], "alphas": [0.2, 0.3], "budgets": [0.0, 0.2, 1.0, 5]},
    "engine": {"n_jobs": 1},
}
TIMING = ["retrain_seconds"]


def scenario(**dynamics_keys) -> Scenario:
    return Scenario.from_dict({**TOY, "dynamics": dynamics_keys})


def model(s: Scenario, seed: int = 0) -> CollectiveDynamics:
    state = initial_state(s, engine.load_data(s, seed=seed), seed)
    return CollectiveDynamics(s, state)


def cells(rounds: pd.DataFrame) -> pd.DataFrame:
    return rounds[rounds["method"] != "base"]


# --------------------------------------------------------------------------- round 1 is the one-shot experiment


def test_one_round_of_the_perfect_collective_is_the_one_shot_run_byte_for_byte(tmp_path):
    """rounds = 1, fixed participation, the coordinator, compliance 1, no noise: runs.csv as without [dynamics]."""
    one, dyn = tmp_path / "one.toml", tmp_path / "dyn.toml"
    one.write_text(tomli_w.dumps(TOY))
    dyn.write_text(tomli_w.dumps({**TOY, "dynamics": {"rounds": 1}}))
    assert main(["run", str(one), "--out", str(tmp_path / "a"), "--quiet", "--no-plots"]) == 0
    assert main(["run", str(dyn), "--out", str(tmp_path / "b"), "--quiet", "--no-plots"]) == 0
    first, second = (tmp_path / "a" / "runs.csv").read_bytes(), (tmp_path / "b" / "runs.csv").read_bytes()
    assert first == second
    assert not (tmp_path / "a" / "rounds.csv").exists()
    rounds = pd.read_csv(tmp_path / "b" / "rounds.csv")
    grid = 2 * 2 * 4
    assert len(rounds) == 2 * (1 + grid) and set(rounds["round"]) == {1}
    assert {"round", "participants", "members_reached", "m", "flips", "flips_minus_m", "eqod", "success"} <= set(
        rounds.columns)
    runs = pd.read_csv(tmp_path / "b" / "runs.csv")
    merged = cells(rounds).merge(runs, on=["seed", "method", "alpha", "budget", "budget_kind"], suffixes=("", "_r"))
    assert len(merged) == 2 * grid
    np.testing.assert_array_equal(merged["flips"], merged["flips_r"])
    np.testing.assert_array_equal(merged["eqod"], merged["eqod_r"])
    np.testing.assert_array_equal(merged["candidates"], merged["pool_size"])


def test_the_last_round_goes_to_runs_csv_and_rounds_csv_resumes(tmp_path):
    path = tmp_path / "dyn.toml"
    path.write_text(tomli_w.dumps({**TOY, "dynamics": {"rounds": 3, "participation": "threshold"}}))
    out = tmp_path / "res"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-plots"]) == 0
    runs, rounds = pd.read_csv(out / "runs.csv"), pd.read_csv(out / "rounds.csv")
    last = cells(rounds[rounds["round"] == 3]).reset_index(drop=True)
    np.testing.assert_array_equal(last["flips"], runs[runs["method"] != "base"]["flips"])
    np.testing.assert_array_equal(last["eqod"], runs[runs["method"] != "base"]["eqod"])
    (out / "partial" / "seed-1.csv").unlink()  # as if killed during seed 1
    (out / "rounds.csv").unlink()
    assert main(["run", str(path), "--out", str(out), "--quiet", "--no-plots"]) == 0
    again = pd.read_csv(out / "rounds.csv")
    pd.testing.assert_frame_equal(again.drop(columns=TIMING), rounds.drop(columns=TIMING))


# --------------------------------------------------------------------------- reproducibility, compliance


def test_same_seed_same_table_other_seed_another():
    s = scenario(rounds=3, participation="threshold", dropout=0.2, compliance=0.7, score_noise=0.05)
    _, first = dynamics.run_seed(s, 0)
    _, again = dynamics.run_seed(s, 0)
    _, other = dynamics.run_seed(s, 1)
    pd.testing.assert_frame_equal(first.drop(columns=TIMING), again.drop(columns=TIMING))
    assert not first.drop(columns=TIMING + ["seed"]).equals(other.drop(columns=TIMING + ["seed"]))


def test_compliance_zero_nothing_flips_in_any_round():
    _, rounds = dynamics.run_seed(scenario(rounds=3, compliance=0.0), 0)
    c = cells(rounds)
    assert (c["flips"] == 0).all() and c["intended_flips"].sum() > 0  # they were told to, and did not
    base = rounds[rounds["method"] == "base"].iloc[0]
    np.testing.assert_array_equal(c["eqod"], base["eqod"])  # the firm saw the true labels only
    assert (c["flips_minus_m"] == -c["m"]).all()


def test_partial_compliance_flips_about_that_share():
    _, rounds = dynamics.run_seed(scenario(rounds=2, compliance=0.5), 0)
    c = cells(rounds)
    assert c["flips"].sum() == pytest.approx(0.5 * c["intended_flips"].sum(), rel=0.15)
    assert (c["flips"] <= c["intended_flips"]).all()


# --------------------------------------------------------------------------- the retraining firm


def test_replace_with_fixed_participation_repeats_round_one_exactly():
    """Nothing in round t depends on the published model or on earlier rounds here (fixed
    participation, the coordinator, no per-round draws that matter): the same flips, so the
    firm holds the same training set and keeps its model. Rows repeat round 1 exactly."""
    _, rounds = dynamics.run_seed(scenario(rounds=3), 0)
    columns = [c for c in rounds.columns if c not in ("round", *TIMING)]
    by_round = [rounds[rounds["round"] == t][columns].reset_index(drop=True) for t in (1, 2, 3)]
    pd.testing.assert_frame_equal(by_round[0], by_round[1])
    pd.testing.assert_frame_equal(by_round[0], by_round[2])
    later = rounds[rounds["round"] > 1]
    assert (later["retrain_seconds"] == 0).all()  # the firm kept its model
    assert (cells(rounds[rounds["round"] == 1])["flips"] > 0).any()


def test_accumulated_reports_are_extra_rows_until_the_window_is_full():
    _, rounds = dynamics.run_seed(scenario(rounds=3, reports="accumulate", window=2), 0)
    base = rounds[rounds["method"] == "base"].set_index("round")
    # Two copies of the same true labels: weaker regularisation, another model (round 2);
    # the window is then full and holds the same reports (round 3: kept).
    assert base.loc[2, "retrain_seconds"] > 0 and base.loc[3, "retrain_seconds"] == 0
    one = engine.run_seed(Scenario.from_dict(TOY), 0)
    assert base.loc[1, "eqod"] == one[one["method"] == "base"]["eqod"].iloc[0]
    c = cells(rounds)
    third = c[c["round"] == 3].reset_index(drop=True)
    second = c[c["round"] == 2].reset_index(drop=True)
    pd.testing.assert_series_equal(second["eqod"], third["eqod"])


def test_accumulate_fits_the_stacked_reports():
    """An independent fit on the two rounds' reports stacked gives round 2's metrics."""
    from agents.decision import relabel
    from server.firm import Firm, make_estimator
    from server.training import evaluate

    s = scenario(rounds=2, reports="accumulate", window=2, participation="threshold", threshold_mean=0.3,
                 threshold_sd=0.3).replace(engine__warm_start=False)
    m = model(s)
    m.run()
    tr = next(t for t in m.trajectories if t.cell.method == "rb-prob" and t.cell.budget == 1.0
              and t.cell.alpha == 0.3)
    p = m.world.prepared
    X = np.vstack([p.X_train, p.X_train])
    y = np.concatenate(list(tr.reports))
    assert (tr.reports[0] != tr.reports[1]).any()  # participation grew: the two rounds differ
    assert (tr.reports[1] == relabel(p.y_train, tr.reports[1] != p.y_train)).all()
    firm = Firm(make_estimator(random_state=m.world.firm_seed)).fit(X, y)
    expected = evaluate(firm, m.world.test)
    assert tr.metrics["eqod"] == pytest.approx(expected["eqod"], abs=1e-12)
    assert tr.metrics["error"] == pytest.approx(expected["error"], abs=1e-12)


# --------------------------------------------------------------------------- participation rules


def test_threshold_rule_hand_worked_cascade():
    """Thresholds 0, 1/n, ..., (k-1)/n and the rest never: everyone sees everyone (counting
    themselves), so round t sees the t - 1 participants of round t - 1 and one more joins:
    participants = min(t, k)."""
    s = scenario(rounds=7, participation="threshold")
    m = model(s)
    for members in m.members:
        n, k = members.n, 5
        members.thresholds = np.where(np.arange(n) < k, np.arange(n) / n, 1.5)
    m.run()
    rounds = m.table()
    for _, row in cells(rounds).iterrows():
        assert row["participants"] == min(row["round"], 5), row


def test_threshold_rule_follows_granovetter_on_everyone():
    """The share of members acting follows r <- F(r) of the thresholds' distribution (counting
    the members' own draws, an independent iteration), and ends near the theoretical fixed point."""
    s = scenario(rounds=12, participation="threshold", threshold_mean=0.1, threshold_sd=0.2)
    m = model(s)
    m.run()
    rounds = cells(m.table())
    for j, members in enumerate(m.members):
        r, expected = 0.0, []
        for _ in range(12):
            r = float(np.mean(members.thresholds <= r))
            expected.append(r)
        got = rounds[rounds["alpha"] == m.grid.alphas[j]].groupby("round")["participants"].first() / members.n
        np.testing.assert_allclose(got.to_numpy(), expected)
    assert expected[-1] == pytest.approx(granovetter_fixed_point(0.1, 0.2), abs=0.1)


def test_organisers_always_act_and_seed_a_neighbour_cascade():
    s = scenario(rounds=6, participation="threshold", threshold_mean=0.5, threshold_sd=0.01, seen="neighbours",
                 organisers=0.05, organisers_by="most-connected",
                 graph={"kind": "watts-strogatz", "k": 4, "p": 0.0})
    m = model(s)
    m.run()
    rounds = cells(m.table())
    first = rounds[rounds["round"] == 1]
    assert (first["participants"] == first["organisers"]).all()  # nobody acts unprompted (thresholds ~ 0.5)
    # On a ring lattice with k = 4 a member needs 2 of its 4 neighbours: the cascade grows from each organiser.
    grows = rounds.groupby(["alpha"])["participants"].apply(lambda s: s.is_monotonic_increasing and s.iloc[-1] > s.iloc[0])
    assert grows.all()


def test_benefit_cost_members_join_once_the_published_rates_show_a_gain():
    """Round 1 publishes the base model: no gain, only organisers act. Round 2 publishes the
    model trained on their flips: a member joins iff the minority's rate gain (minus the
    majority's) it sees -- read here from the round-1 rows' sp_signed -- beats its cost."""
    # Round 1 is the same for any cost > 0 (nobody has seen a gain): probe it, then set the
    # cost below the smallest gain a cell saw (cells that saw none stay with their organisers).
    probe = scenario(rounds=1, participation="benefit-cost", public=["group-rates"], cost_mean=1e-9, cost_sd=0.0,
                     organisers=0.2)
    _, first = dynamics.run_seed(probe, 0)
    base_gap = first[first["method"] == "base"]["sp_signed"].iloc[0]
    gains = cells(first)["sp_signed"] - base_gap
    cost = 0.5 * float(gains[gains > 0].min())
    s = probe.replace(dynamics__rounds=2, dynamics__cost_mean=cost)
    _, rounds = dynamics.run_seed(s, 0)
    c = cells(rounds).set_index(["method", "alpha", "budget"])
    one, two = c[c["round"] == 1], c[c["round"] == 2]
    assert (one["participants"] == one["organisers"]).all()
    base_gap = rounds[rounds["method"] == "base"]["sp_signed"].iloc[0]
    gain = one["sp_signed"] - base_gap
    joins = gain > cost
    assert joins.any() and (~joins).any()
    assert (two["participants"][joins] == two["eligible"][joins]).all()
    assert (two["participants"][~joins] == two["organisers"][~joins]).all()


def test_free_riders_keep_the_gain_without_acting():
    s = scenario(rounds=3, participation="benefit-cost", public=["group-rates"], cost_mean=0.001, cost_sd=0.0,
                 organisers=0.2)
    _, naive = dynamics.run_seed(s, 0)
    _, free = dynamics.run_seed(s.replace(dynamics__free_ride=True), 0)
    naive, free = cells(naive), cells(free)
    later = free[free["round"] > 1]
    assert (naive[naive["round"] > 1]["participants"] > naive[naive["round"] > 1]["organisers"]).any()
    assert (later["participants"] < naive[naive["round"] > 1]["participants"].to_numpy()).any()
    riding = later[later["free_riders"] > 0]
    assert len(riding) and riding["benefit_free_riders"].notna().all()
    # Free riders act nowhere: participants and free riders never overlap.
    assert (riding["participants"] + riding["free_riders"] <= riding["eligible"]).all()


# --------------------------------------------------------------------------- coordination


def test_reach_zero_hops_reaches_only_the_organisers():
    s = scenario(rounds=2, coordination="reach", hops=0, organisers=3,
                 graph={"kind": "erdos-renyi", "mean_degree": 8})
    m = model(s)
    m.step()
    rounds = cells(m.table())
    assert (rounds["members_reached"] == 3).all() and (rounds["participants"] > 3).all()
    for tr in m.trajectories:
        flipped = tr.reports[-1] != m.world.prepared.y_train
        organisers = tr.members.positions[tr.members.organisers]
        assert set(np.flatnonzero(flipped)) <= set(organisers)


def test_reach_is_the_participants_within_hops_of_an_organiser():
    """members_reached against breadth-first search by networkx over the participants' graph."""
    import networkx as nx

    reached = {}
    for hops in (0, 1, 2):
        s = scenario(rounds=1, coordination="reach", hops=hops, organisers=2, dropout=0.2,
                     graph={"kind": "erdos-renyi", "mean_degree": 40})
        m = model(s)
        m.step()
        rows = cells(m.table()).reset_index(drop=True)
        for tr, (_, row) in zip(m.trajectories, rows.iterrows()):
            active = np.flatnonzero(tr.active)
            graph = nx.from_scipy_sparse_array(tr.members.graph[active][:, active])
            sources = [i for i, member in enumerate(active) if tr.members.organisers[member]]
            near = nx.multi_source_dijkstra_path_length(graph, sources, cutoff=hops) if sources else {}
            assert row["members_reached"] == len(near), (hops, row["members_reached"], len(near))
        reached[hops] = rows
    assert (reached[0]["members_reached"] < reached[2]["members_reached"]).all()
    assert (reached[2]["members_reached"] < reached[2]["participants"]).any()
    short = reached[1]
    assert (short["flips_minus_m"] <= 0).all() and (short["flips_minus_m"] < 0).any()


def test_staleness_acts_on_the_signal_of_k_rounds_ago():
    _, rounds = dynamics.run_seed(scenario(rounds=3, staleness=1), 0)
    c = cells(rounds)
    assert (c[c["round"] == 1]["flips"] == 0).all()  # nothing published a round before the first
    later = c[c["round"] > 1]
    assert (later["flips"] == later["m"]).all()  # fixed participation: last round's threshold is today's


def test_dropout_organisers_stay_and_the_rest_sit_out_at_that_rate():
    _, rounds = dynamics.run_seed(scenario(rounds=8, dropout=0.3, organisers=0.1), 0)
    c = cells(rounds)
    # Every cell of one alpha sees the same draws: count one cell per round at the largest alpha,
    # each non-organiser an independent Bernoulli(0.3) per round (within 3 binomial sd).
    one = c[(c["alpha"] == c["alpha"].max()) & (c["method"] == c["method"].iloc[0])
            & (c["budget"] == c["budget"].iloc[0])]
    others = int((one["eligible"] - one["organisers"]).sum())
    assert abs(one["dropouts"].sum() / others - 0.3) < 3 * np.sqrt(0.3 * 0.7 / others)
    np.testing.assert_array_equal(c["participants"], c["eligible"] - c["dropouts"])
    assert (c["flips"] == c["m"]).all()  # the coordinator still flips exactly M of those who showed up


def test_score_noise_keeps_m_but_moves_who_flips():
    clean, noisy = model(scenario(rounds=1)), model(scenario(rounds=1, score_noise=0.2))
    clean.run(), noisy.run()
    c, n = cells(clean.table()), cells(noisy.table())
    np.testing.assert_array_equal(c["flips"], n["flips"])
    moved = [(a.reports[-1] != b.reports[-1]).any() for a, b in zip(clean.trajectories, noisy.trajectories)]
    assert any(moved)


def test_threshold_error_is_zero_for_the_coordinator_and_counts_ranks_for_stale_signals():
    _, fresh = dynamics.run_seed(scenario(rounds=2), 0)
    assert (cells(fresh)["threshold_error_rank"] == 0).all()
    assert (cells(fresh)["threshold_error"].fillna(0) == 0).all()
    # A stale threshold (last round's exact one) against a pool that has grown since: its rank
    # is how many of today's pool reach it, counted here one candidate at a time.
    m = model(scenario(rounds=2, participation="threshold", threshold_mean=0.2, threshold_sd=0.3, staleness=1))
    m.step()
    published = {id(tr): tr.signals.at(0) for tr in m.trajectories}
    m.step()
    rows = cells(m.table())
    rows = rows[rows["round"] == 2].reset_index(drop=True)
    checked = 0
    for tr, (_, row) in zip(m.trajectories, rows.iterrows()):
        members, (t_score, t_ticket) = tr.members, published[id(tr)]
        pool = np.flatnonzero(tr.active & members.candidate)
        held = [i for i in pool if not np.isnan(t_score[i])]
        if not held:
            assert math.isnan(row["threshold_error_rank"])
            continue
        keys = m.scores[tr.cell.method_index, members.column[pool]]
        ties = members.ties[pool]
        i = held[0]  # every holder holds the same (coordinator) threshold
        reach = sum(1 for k, t in zip(keys, ties) if k > t_score[i] or (k == t_score[i] and t >= t_ticket[i]))
        assert row["threshold_error_rank"] == abs(reach - row["m"])
        checked += reach != row["m"]
    assert checked  # some stale thresholds were off


# --------------------------------------------------------------------------- the table


def test_per_round_table_has_stable_columns():
    _, rounds = dynamics.run_seed(scenario(rounds=2), 0)
    head = ["coordination", "round", "method", "alpha", "budget", "budget_kind"]
    columns = list(rounds.columns)
    assert columns.index("seed") < columns.index("round")
    assert [c for c in columns if c in DYNAMICS_COLUMNS] == list(DYNAMICS_COLUMNS)
    assert [c for c in columns if c in head] == head
    assert {"error", "sp_diff", "eqod", "eopp_diff", "tpr_0", "tpr_1", "fpr_0", "fpr_1", "success"} <= set(columns)
    assert len(rounds) == 2 * (1 + 2 * 2 * 4)
    assert math.isclose(rounds["participant_share"].max(), (rounds["participants"] / rounds["n_minority"]).max())


# --------------------------------------------------------------------------- gossip

SYNTHETIC = {
    "name": "gossip",
    "seeds": [0],
    "data": {"dataset": "synthetic", "options": {"n": 20000, "n_features": 3}},
    "collective": {"methods": ["rb-prob", "random"], "alphas": [1.0], "budgets": [0.2, 0.5, 300],
                   "validation": 0.0},
    "engine": {"n_jobs": 1},
}


def test_gossip_with_enough_steps_on_a_dense_graph_flips_within_one_percent_of_m():
    s = Scenario.from_dict({**SYNTHETIC, "dynamics": {
        "rounds": 1, "coordination": ["gossip", "coordinator"], "gossip_steps": 40, "gossip_bins": 256,
        "graph": {"kind": "erdos-renyi", "mean_degree": 30}}})
    runs, rounds = dynamics.run_seed(s, 0)
    gossip = cells(rounds[rounds["coordination"] == "gossip"])
    assert (gossip["m"] >= 300).all() and (gossip["members_reached"] == gossip["participants"]).all()
    assert (gossip["flips_minus_m"].abs() <= 0.01 * gossip["m"]).all(), gossip[["m", "flips"]]
    assert (gossip["threshold_error_rank"] <= 0.01 * gossip["m"]).all()
    coordinator = cells(rounds[rounds["coordination"] == "coordinator"])
    assert (coordinator["flips"] == coordinator["m"]).all()
    # runs.csv holds the first mode's rows only
    np.testing.assert_array_equal(runs[runs["method"] != "base"]["flips"], gossip["flips"])


def test_gossip_on_a_clustered_graph_needs_many_steps():
    """Push-sum mixes slowly on a small-world ring (Boyd et al.): after 20 steps each member's
    threshold is off by hundreds of ranks, after 150 by about 1% of the pool."""
    errors = {}
    for steps in (20, 150):
        s = Scenario.from_dict({**SYNTHETIC, "dynamics": {
            "rounds": 1, "coordination": "gossip", "gossip_steps": steps,
            "graph": {"kind": "watts-strogatz", "k": 6, "p": 0.05}}})
        c = cells(dynamics.run_seed(s, 0)[1])
        assert (c["members_reached"] == c["participants"]).all()
        errors[steps] = c["threshold_error_rank"].to_numpy()
        pool = c["candidates"].to_numpy()
    assert (errors[20] > 5 * errors[150]).all()
    assert (errors[150] < 0.01 * pool).all()


def test_edge_list_and_sbm_graphs_are_built_among_the_minority(tmp_path):
    s = scenario(rounds=1, coordination="reach", organisers=1, hops=1)
    world = model(s).world
    ids = np.sort(world.user_ids[world.minority])  # a chain through the minority's dataset row ids
    (tmp_path / "chain.txt").write_text("".join(f"{u} {v}\n" for u, v in zip(ids[:-1], ids[1:])))
    raw = {**TOY, "dynamics": {"rounds": 1, "coordination": "reach", "organisers": 1, "hops": 1,
                               "graph": {"kind": "edge-list", "path": "chain.txt"}}}
    (tmp_path / "s.toml").write_text(tomli_w.dumps(raw))
    from simulations.scenario import load_scenario

    chained = model(load_scenario(tmp_path / "s.toml"))
    assert chained.graph.nnz == 2 * (ids.size - 1)
    chained.run()
    assert (cells(chained.table())["members_reached"] <= 3).all()  # an organiser and its chain neighbours
    blocks = model(scenario(rounds=1, coordination="gossip",
                            graph={"kind": "sbm", "blocks": 2, "p_in": 0.2, "p_out": 0.01}))
    graph = blocks.graph
    assert (graph != graph.T).nnz == 0 and graph.nnz > 0


def test_per_user_draws_are_each_users_own_tickets():
    """Sharding does not matter: the model's thresholds, organisers and round draws for any
    subset of users are what that subset alone draws from (seed keys, user ids)."""
    from agents.decision import user_tickets
    from agents.participation import normal_draws

    m = model(scenario(rounds=2, participation="threshold", organisers=3, dropout=0.4, compliance=0.5), seed=4)
    keys = dynamics.draw_keys(4)
    ids = m.world.user_ids[m.minority]
    some = np.array([5, 0, 17, 3])
    members = m.members[-1]
    np.testing.assert_array_equal(normal_draws(ids[members.local[some]], keys.threshold, mean=0.25, sd=0.1),
                                  members.thresholds[some])
    tickets = user_tickets(ids[members.local], keys.organisers)
    assert set(np.flatnonzero(members.organisers)) == set(np.argsort(tickets)[:3])
    stay = user_tickets(ids[some], keys.round("dropout", 2)) >= 0.4
    rows = m.run().table()
    assert len(rows) and keys.round("dropout", 1) != keys.round("dropout", 2)
    tr = m.trajectories[-1]  # the largest alpha's last cell; organisers always act
    np.testing.assert_array_equal(tr.active[some], (tr.joined[some] & stay) | members.organisers[some])


def test_the_one_shot_engine_refuses_a_dynamics_scenario_in_one_line():
    """simulations.engine would run one round and drop [dynamics] silently: it refuses instead."""
    from agents.errors import ConfigError

    s = scenario(rounds=2)
    for run in (lambda: engine.run_seed(s, 0), lambda: engine.BACKEND.run_seed(s, 0), lambda: engine.run_scenario(s)):
        with pytest.raises(ConfigError, match=r"has \[dynamics\].*allowed: simulations.dynamics.run_seed") as info:
            run()
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- limited majority information per member


def test_knowing_every_reference_row_is_the_default_in_any_number_of_groups():
    default = model(scenario(rounds=2, participation="threshold", dropout=0.2)).run().table()
    for groups in (1, 3):
        s = scenario(rounds=2, participation="threshold", dropout=0.2, reference_per_member=10**9,
                     knowledge_groups=groups)
        limited = model(s).run().table()
        pd.testing.assert_frame_equal(limited.drop(columns=TIMING), default.drop(columns=TIMING))


def _knowledge_by_hand(m, groups: int, n: int):
    """Each candidate's group and each group's known reference positions, computed here
    from the documented tickets (not through the model's helpers)."""
    from agents.decision import user_tickets
    from agents.participation import mix_key

    key = dynamics.draw_keys(m.world.seed).knowledge
    ids = m.world.user_ids[m.candidates]
    group = np.floor(groups * user_tickets(ids, mix_key(key, 0))).astype(int)
    reference = m.world.reference
    rows = [reference[np.sort(np.argsort(user_tickets(m.world.user_ids[reference], mix_key(key, 1, g)))[:n])]
            for g in range(groups)]
    return group, rows


def test_one_known_row_per_group_flips_the_groups_whose_row_is_positive_first():
    """rb-label with one known row (k is cut to 1): every candidate of a group scores its
    group's row's label. The coordinator ranks (score, tie ticket): the M flips are the
    candidates of the positive-row groups with the largest tie tickets -- not the top M
    of the full-knowledge ranking, though still exactly M."""
    raw = {**TOY, "collective": {"methods": ["rb-label"], "alphas": [0.3], "budgets": [0.1]}}
    limited = model(Scenario.from_dict({**raw, "dynamics": {"rounds": 1, "reference_per_member": 1,
                                                            "knowledge_groups": 4}}))
    group, rows = _knowledge_by_hand(limited, 4, 1)
    y = limited.world.prepared.y_train
    label = np.array([y[r[0]] for r in rows])
    assert set(label) == {0, 1}  # some groups know a positive row, some a negative one
    np.testing.assert_array_equal(limited.scores[0], label[group].astype(float))
    limited.run()
    tr = limited.trajectories[0]
    ties = limited.world.tie_tickets[limited.candidates]
    positive = np.flatnonzero(label[group] == 1)
    m_count = int(tr.last["m"])
    assert 0 < m_count <= positive.size
    expected = set(limited.candidates[positive[np.argsort(-ties[positive])[:m_count]]])
    flipped = set(np.flatnonzero(tr.reports[-1] != y))
    assert flipped == expected
    full = model(Scenario.from_dict({**raw, "dynamics": {"rounds": 1}})).run()
    full_flipped = set(np.flatnonzero(full.trajectories[0].reports[-1] != y))
    assert len(full_flipped) == len(flipped) == m_count and full_flipped != flipped


def test_each_group_scores_with_a_scorer_fitted_on_its_own_rows():
    from agents.scoring import make_scorer

    s = scenario(rounds=1, reference_per_member=30, knowledge_groups=3)
    m = model(s)
    group, rows = _knowledge_by_hand(m, 3, 30)
    p = m.world.prepared
    X = p.X_train[m.candidates]
    fitted = [make_scorer("rb-prob").fit(p.X_train[r], p.y_train[r]) for r in rows]
    for g in range(3):
        np.testing.assert_array_equal(m.scores[0, group == g], fitted[g].score_samples(X[group == g]))
    one = X[:1]  # the same person would score differently in each group
    assert len({float(f.score_samples(one)[0]) for f in fitted}) == 3
    default = model(scenario(rounds=1))
    assert not np.array_equal(m.scores[0], default.scores[0])
    np.testing.assert_array_equal(m.scores[1], default.scores[1])  # random: scores carry no knowledge


def test_limited_knowledge_same_seed_same_table_and_groups_are_tickets():
    s = scenario(rounds=2, participation="threshold", reference_per_member=5, knowledge_groups=3)
    first, again = model(s).run().table(), model(s).run().table()
    pd.testing.assert_frame_equal(first.drop(columns=TIMING), again.drop(columns=TIMING))
    keys = dynamics.draw_keys(0)
    ids = np.arange(10_000, 10_500)
    some = np.array([7, 3, 400, 21])
    np.testing.assert_array_equal(keys.knowledge_group(ids[some], 3), keys.knowledge_group(ids, 3)[some])
    counts = np.bincount(keys.knowledge_group(ids, 3), minlength=3)
    assert abs(counts - 500 / 3).max() < 3 * np.sqrt(500 * (1 / 3) * (2 / 3))


def test_a_group_whose_rows_cannot_fit_its_method_is_one_line():
    from agents.errors import ConfigError

    raw = {**TOY, "collective": {"methods": ["rb-dist"], "alphas": [0.3], "budgets": [0.1]},
           "dynamics": {"rounds": 1, "reference_per_member": 1, "knowledge_groups": 8}}
    with pytest.raises(ConfigError, match=r"\[dynamics\] reference_per_member: knowledge group \d+'s 1 majority "
                                          r"rows cannot fit 'rb-dist' .*; allowed: a larger") as info:
        model(Scenario.from_dict(raw))
    assert "\n" not in str(info.value)

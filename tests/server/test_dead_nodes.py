"""A dead node costs seconds, not the wave timeout: node liveness, per-node deadlines, late replies."""

import threading
import time

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from server.server_app import RunSettings, run_rounds
from server.waves import Wire, _push_and_pull
from simulations import engine
from simulations.flower.files import prepare_run
from simulations.flower.inprocess import InProcessGrid
from simulations.scenario import Scenario

TOY = Scenario(name="toy").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "random"), collective__alphas=(0.3, 0.6), collective__budgets=(0.5, 1.0),
    engine__n_jobs=1, collective__validation=0.0,
)


def _echo(msg, context):
    return Message(RecordDict({"echo": ConfigRecord({"node": context.node_id})}), reply_to=msg)


def _grid(n=10):
    return InProcessGrid([{} for _ in range(n)], {}, app=_echo)


def _messages(grid, nodes=None):
    return [Message(RecordDict(), dst_node_id=n, message_type="query.echo", group_id="1", ttl=600.0)
            for n in (nodes or grid.get_node_ids())]


def test_a_node_dead_before_the_wave_is_not_waited_for():
    grid = _grid()
    wire = Wire(grid, 1, timeout=600.0, node_timeout=30.0)
    grid.kill(1003)
    t0 = time.monotonic()
    got = wire.wave({n: RecordDict() for n in range(1000, 1010)}, "query.echo")
    assert time.monotonic() - t0 < 2.0
    assert sorted(got) == [n for n in range(1000, 1010) if n != 1003]
    assert wire.log.counts["query.echo"] == {"sent": 10, "ok": 9, "errors": 0, "timeouts": 1, "offline": 1}


def test_a_node_that_dies_during_the_wave_is_given_up_within_a_second_or_so():
    grid = _grid()
    grid.delays[1007] = 1000.0  # took its message, will never answer in time
    threading.Timer(0.2, grid.kill, args=(1007,)).start()
    wire = Wire(grid, 1, timeout=600.0, node_timeout=30.0)
    t0 = time.monotonic()
    got = wire.wave({n: RecordDict() for n in range(1000, 1010)}, "query.echo")
    assert time.monotonic() - t0 < 2.5
    assert len(got) == 9 and 1007 not in got
    assert wire.log.counts["query.echo"] == {"sent": 10, "ok": 9, "errors": 0, "timeouts": 1, "offline": 1}


def test_a_silent_but_listed_node_times_out_at_its_own_deadline():
    grid = _grid()
    grid.delays[1002] = 1000.0  # still listed online, never answers
    wire = Wire(grid, 1, timeout=600.0, node_timeout=0.5)
    t0 = time.monotonic()
    got = wire.wave({n: RecordDict() for n in range(1000, 1010)}, "query.echo")
    assert 0.5 <= time.monotonic() - t0 < 2.0
    assert len(got) == 9
    assert wire.log.counts["query.echo"] == {"sent": 10, "ok": 9, "errors": 0, "timeouts": 1}


def test_the_per_node_deadline_starts_at_the_push_not_at_the_wave_start():
    """With one message in flight, ten 0.1 s answers take 1 s; a 0.3 s node deadline loses none."""
    grid = _grid()
    for n in grid.get_node_ids():
        grid.delays[n] = 0.1
    wire = Wire(grid, 1, timeout=600.0, window=1, node_timeout=0.3)
    assert len(wire.wave({n: RecordDict() for n in range(1000, 1010)}, "query.echo")) == 10


def test_a_reply_after_its_node_was_given_up_is_counted_late_and_not_used():
    grid = _grid(3)
    grid.delays.update({1000: 0.5, 1001: 0.9})  # 1000 answers after it was given up; 1001 keeps the wave open
    threading.Timer(0.1, grid.kill, args=(1000,)).start()
    out = _push_and_pull(grid, _messages(grid), 600.0, node_timeout=30.0, liveness=0.05)
    assert sorted(int(r.metadata.src_node_id) for r in out.replies) == [1001, 1002]
    assert (out.offline, out.timed_out, out.late) == (1, 0, 1)


def test_late_replies_show_in_the_wave_log():
    """One message in flight: 1000 is given up at 0.3 s, its reply (0.8 s) comes while the others are awaited."""
    grid = _grid()
    for n in grid.get_node_ids():
        grid.delays[n] = 0.15
    grid.delays[1000] = 0.8
    wire = Wire(grid, 1, timeout=600.0, window=1, node_timeout=0.3)
    got = wire.wave({n: RecordDict() for n in range(1000, 1010)}, "query.echo")
    assert sorted(got) == list(range(1001, 1010))
    assert wire.log.counts["query.echo"] == {"sent": 10, "ok": 9, "errors": 0, "timeouts": 1, "late": 1}


def test_a_grid_without_a_node_list_falls_back_to_deadlines():
    class NoList(InProcessGrid):
        def get_node_ids(self):
            raise RuntimeError("no node list")

    grid = NoList([{} for _ in range(4)], {}, app=_echo)
    grid.delays[1001] = 1000.0
    wire = Wire(grid, 1, timeout=600.0, node_timeout=0.3)
    got = wire.wave({n: RecordDict() for n in range(1000, 1004)}, "query.echo")
    assert sorted(got) == [1000, 1002, 1003]
    assert wire.log.counts["query.echo"]["timeouts"] == 1


# ------------------------------------------------------------ the whole ServerApp, 10 nodes


@pytest.fixture(scope="module")
def dataset():
    return engine.load_data(TOY, seed=0)


def _run(files, tmp_path, tamper=None, *, dead_after_signup=None, timeout=600.0, node_timeout=30.0):
    grid = InProcessGrid([{"partition-id": i} for i in range(files.n_nodes)],
                         {"node-data-dir": str(files.node_data_dir)}, tamper=tamper)
    if dead_after_signup is not None:
        def kill_on_coordinate(node_id, msg, reply):  # the coordinator's first message follows sign-up
            if msg.metadata.message_type == "query.coordinate":
                grid.kill(dead_after_signup)
            return reply

        grid.tamper = kill_on_coordinate
    t0 = time.monotonic()
    results = run_rounds(grid, RunSettings(files.run_dir, rounds=1, expected_nodes=files.n_nodes, node_wait=0,
                                           timeout=timeout, node_timeout=node_timeout, mode="evaluate"))
    return results["rounds"][0], time.monotonic() - t0


def test_a_round_with_one_dead_node_among_ten_ends_in_seconds(dataset, tmp_path):
    files = prepare_run(TOY, 0, tmp_path / "dead", dataset=dataset, agents_per_node=7)
    assert files.n_nodes == 10
    dead = 1003
    r, seconds = _run(files, tmp_path, dead_after_signup=dead)
    assert seconds < 5.0  # the waves' timeout is 600 s, the per-node deadline 30 s
    report = r["messages"]["evaluate.cells"]
    assert report["sent"] == 9 and report["ok"] == 8 and report["timeouts"] == 1
    # Given up once, as offline, in the first wave after it died; skipped by the round's later waves.
    assert sum(c.get("offline", 0) for c in r["messages"].values()) == 1
    assert report.get("offline", 0) + report.get("skipped", 0) == 1

    # Same results as when that node's report is simply lost (a short timeout, no liveness signal).
    lost = lambda node_id, msg, reply: None if node_id == dead and msg.metadata.message_type != "query.join" else reply
    files2 = prepare_run(TOY, 0, tmp_path / "lost", dataset=dataset, agents_per_node=7)
    r2, _ = _run(files2, tmp_path, lost, timeout=1.0, node_timeout=0.0)
    assert r["n_train"] == r2["n_train"] and r["flips"] == r2["flips"] and r["metrics"] == r2["metrics"]


def test_honest_results_do_not_depend_on_the_node_deadline(dataset, tmp_path):
    files = prepare_run(TOY, 0, tmp_path / "a", dataset=dataset, agents_per_node=7)
    with_deadline, _ = _run(files, tmp_path, node_timeout=30.0)
    files = prepare_run(TOY, 0, tmp_path / "b", dataset=dataset, agents_per_node=7)
    without, _ = _run(files, tmp_path, node_timeout=0.0)
    for key in ("n_train", "flips", "metrics", "messages", "nodes", "coalition"):
        assert with_deadline[key] == without[key], key
    assert all("offline" not in c and "late" not in c and c["timeouts"] == 0 for c in with_deadline["messages"].values())


def test_a_silent_node_costs_one_node_deadline_per_round_not_one_per_wave(dataset, tmp_path):
    """A SIGKILLed SuperNode stays listed ONLINE for up to a minute: after one missed deadline
    the rest of the round's waves skip it."""
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=7)
    grid = InProcessGrid([{"partition-id": i} for i in range(files.n_nodes)],
                         {"node-data-dir": str(files.node_data_dir)})

    def hang_after_signup(node_id, msg, reply):
        if msg.metadata.message_type == "query.coordinate":
            grid.delays[1003] = 1000.0
        return reply

    grid.tamper = hang_after_signup
    t0 = time.monotonic()
    results = run_rounds(grid, RunSettings(files.run_dir, rounds=2, expected_nodes=files.n_nodes, node_wait=0,
                                           timeout=600.0, node_timeout=1.0, mode="evaluate"))
    assert time.monotonic() - t0 < 2 * 1.0 + 4.0  # one deadline per round
    for r in results["rounds"]:
        waited = [t for t, c in r["messages"].items() if c["timeouts"] and not c.get("skipped")]
        assert len(waited) <= 1, r["messages"]
        assert r["messages"]["evaluate.cells"]["ok"] == 8 and r["messages"]["evaluate.cells"]["timeouts"] == 1
        assert r["n_train"] == results["rounds"][0]["n_train"]

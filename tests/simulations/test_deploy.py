"""A real SuperLink and three SuperNodes on loopback give the vectorised engine's results."""

import json

import numpy as np
import pandas as pd
import pytest

from simulations import engine
from simulations.flower import deploy
from simulations.flower.deploy import Deployment, main, node_commands
from simulations.flower.files import prepare_run, results_frame
from simulations.flower.processes import alive, process_tree
from simulations.scenario import Scenario
from simulations.state import build_world

TOY = Scenario(name="toy-deploy").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "rb-dist", "random"), collective__alphas=(0.3, 0.6),
    collective__budgets=(0.2, 1.0, 7), engine__n_jobs=1, collective__validation=0.0,
)


def test_node_commands_name_each_nodes_file(tmp_path):
    files = prepare_run(TOY, 0, tmp_path, agents_per_node=30)
    cmds = node_commands(files, 9091, [9100, 9101, 9102])
    assert len(cmds) == 3
    for i, cmd in enumerate(cmds):
        assert cmd[cmd.index("--superlink") + 1] == "127.0.0.1:9091"
        assert cmd[cmd.index("--port") + 1] == str(9100 + i)
        assert f'data-path="{files.node_files[i]}"' in cmd[cmd.index("--node-config") + 1]
        assert "--insecure" in cmd


def test_print_commands(tmp_path, capsys):
    cfg = tmp_path / "toy.toml"
    cfg.write_text('name = "t"\nseeds = [0]\n[data]\ndataset = "toy"\n[data.options]\nn = 86\n'
                   '[collective]\nmethods = ["random"]\nalphas = [0.5]\nbudgets = [1.0]\n')
    assert main([str(cfg), "--agents-per-node", "30", "--workdir", str(tmp_path / "w"), "--print-commands"]) == 0
    out = capsys.readouterr().out
    assert out.count("flower-supernode") == 3 and "flower-superlink" in out and "flwr run" in out
    assert main([str(cfg), "--agents-per-node", "0", "--print-commands"]) == 2
    assert main([str(cfg), "--rounds", "0"]) == 2  # refused before anything starts
    assert "--rounds 0" in capsys.readouterr().err


class InProcessDeployment:
    """Stands in for ``deploy.Deployment``: the same files and run config, the nodes in this process."""

    def __init__(self, files, workdir, **kw):
        self.files = files

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run(self, *, rounds, timeout, on_round=None, mode="deploy"):
        from simulations.flower.inprocess import run_in_process

        return run_in_process(self.files, rounds=rounds, mode=mode)


def test_the_deploy_command_runs_the_firm_on_one_cell_unless_asked_to_evaluate(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(deploy, "Deployment", InProcessDeployment)
    cfg = tmp_path / "toy.toml"
    cfg.write_text('name = "t"\nseeds = [0]\n[data]\ndataset = "toy"\n[data.options]\nn = 86\n'
                   '[collective]\nmethods = ["rb-prob", "random"]\nalphas = [0.6]\nbudgets = [1.0]\n')
    work, out = tmp_path / "w", tmp_path / "rows.csv"
    args = [str(cfg), "--agents-per-node", "30", "--workdir", str(work), "--out", str(out)]
    # The firm (the default) needs the one cell the collective deploys: refused before any file is written.
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "grid has 2 cells" in err and "allowed: --cell METHOD:ALPHA:BUDGET" in err and err.count("\n") == 1
    assert not (work / "seed-0").exists()
    # --cell picks it: one row, the firm's metrics, flips unknown to it.
    assert main([*args, "--cell", "rb-prob:0.6:1.0"]) == 0
    said = capsys.readouterr().out
    assert "the firm (deployed cell rb-prob, alpha 0.6, budget 1) received 60 users" in said
    assert "flips: unknown to the firm" in said and "base model" not in said
    rows = pd.read_csv(out)
    assert len(rows) == 1 and rows["method"].tolist() == ["rb-prob"] and rows["flips"].isna().all()
    results = json.loads((work / "seed-0" / "results.json").read_text())
    assert results["mode"] == "deploy" and "flips" not in results["rounds"][0]
    # --evaluate: the experimenter's view of every cell, said to be that.
    assert main([*args, "--evaluate"]) == 0
    said = capsys.readouterr().out
    assert "the evaluator (the experimenter's loopback view, not a firm's): base model" in said and "2 cells" in said
    assert len(pd.read_csv(out)) == 3
    assert main([*args, "--cell", "random:0.6:1.0", "--print-commands"]) == 0
    run = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("flwr run"))
    assert "deploy" in run.split("mode=")[1]  # the firm's run config
    for bad in ("rb-prob:0.6", "rb-prob:x:1.0", "magic:0.6:1.0", "rb-prob:0.6:-1", "rb-prob:1.5:1.0", "::"):
        assert main([*args, "--cell", bad]) == 2, bad
        err = capsys.readouterr().err
        assert "--cell" in err and "allowed" in err and err.count("\n") == 1, err


def write_device_files(files, dataset):
    """Each user node's file as a device holds it (docs/federated.md, On a device), written here from
    the dataset's raw records: user_id, the raw feature columns, a, y. Nothing encoded."""
    world = build_world(TOY, dataset, 0)
    p = world.prepared
    for i, path in enumerate(files.node_files[:-1]):
        rows = np.arange(30 * i, min(30 * (i + 1), world.n_users))
        frame = pd.DataFrame({"user_id": world.user_ids[rows]})
        for column in dataset.features.columns:
            frame[column] = dataset.features[column].to_numpy()[p.train_index[rows]]
        frame["a"], frame["y"] = p.a_train[rows], p.y_train[rows]
        frame.to_csv(path, index=False)


@pytest.mark.slow
def test_superlink_and_three_supernodes_match_the_engine(tmp_path):
    dataset = engine.load_data(TOY, seed=0)
    reference = engine.run_seed(TOY, 0, dataset=dataset)
    files = prepare_run(TOY, 0, tmp_path / "seed-0", dataset=dataset, agents_per_node=30, device_files="raw")
    assert files.n_nodes == 3  # two shards of 30 users and the coordinator
    assert [p.suffix for p in files.node_files] == [".csv", ".csv", ".npz"] and files.invitation.exists()
    write_device_files(files, dataset)  # the nodes encode them with the encoding the firm publishes
    started = []
    with Deployment(files, tmp_path) as dep:
        started = [p.pid for p in dep.processes]
        lines = []
        results = dep.run(rounds=2, timeout=180, on_round=lines.append, mode="evaluate")  # every cell
        started += [pid for p in dep.processes for pid in process_tree(p.pid)]
    assert results["connected_nodes"] == 3 and len(results["rounds"]) == 2
    assert [line.split(":")[0] for line in lines] == ["round 1/2", "round 2/2"]  # progress, as it happened
    assert "2/2 nodes reported, rejected: none" in lines[0]
    for round_ in (0, 1):
        frame = results_frame(TOY, dataset, 0, results, round_=round_)
        cols = [c for c in reference.columns if c != "backend"]
        pd.testing.assert_frame_equal(frame[cols], reference[cols], check_exact=True)
    labels = np.load(files.run_dir / "labels.npz")
    assert labels["labels"].shape == (1 + 3 * 2 * 3, 60)
    assert len(started) >= 4
    assert not [pid for pid in started if alive(pid)]  # every process we started is stopped


@pytest.mark.slow
def test_a_deployed_firm_gets_one_label_per_user_and_the_engines_row_of_its_cell(tmp_path):
    """mode = deploy on real processes: one label row, no flips, the engine's metrics for the cell
    (no warm start: the firm fits from scratch); the evaluator on the same nodes sees every row."""
    one = TOY.replace(collective__methods=("rb-prob",), collective__alphas=(0.6,), collective__budgets=(1.0,),
                      engine__warm_start=False)
    dataset = engine.load_data(one, seed=0)
    reference = engine.run_seed(one, 0, dataset=dataset)
    files = prepare_run(one, 0, tmp_path / "seed-0", dataset=dataset, agents_per_node=30)
    with Deployment(files, tmp_path) as dep:
        lines = []
        firm = dep.run(rounds=1, timeout=180, on_round=lines.append)
        firm_labels = np.load(files.run_dir / "labels.npz")["labels"]
        evaluated = dep.run(rounds=1, timeout=180, mode="evaluate")
    assert firm["mode"] == "deploy" and "evaluate.cells" not in firm["rounds"][0]["messages"]
    assert evaluated["mode"] == "evaluate" and "train.report" not in evaluated["rounds"][0]["messages"]
    assert firm_labels.shape == (1, 60) and "the firm received 60 users" in lines[0]
    cols = [c for c in reference.columns if c not in ("backend", "flips")]
    cell = reference[reference["method"] != "base"].reset_index(drop=True)
    frame = results_frame(one, dataset, 0, firm)
    assert len(frame) == 1 and frame["flips"].isna().all()
    pd.testing.assert_frame_equal(frame[cols], cell[cols], check_exact=True)
    cols = [c for c in reference.columns if c != "backend"]
    pd.testing.assert_frame_equal(results_frame(one, dataset, 0, evaluated)[cols], reference[cols], check_exact=True)
    assert int(reference["flips"].iloc[1]) > 0  # someone did flip, and the firm could not tell

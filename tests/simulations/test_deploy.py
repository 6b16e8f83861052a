"""A real SuperLink and three SuperNodes on loopback give the vectorised engine's results."""

import numpy as np
import pandas as pd
import pytest

from simulations import engine
from simulations.flower.deploy import Deployment, main, node_commands
from simulations.flower.files import prepare_run, results_frame
from simulations.flower.processes import alive, process_tree
from simulations.scenario import Scenario

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


@pytest.mark.slow
def test_superlink_and_three_supernodes_match_the_engine(tmp_path):
    dataset = engine.load_data(TOY, seed=0)
    reference = engine.run_seed(TOY, 0, dataset=dataset)
    files = prepare_run(TOY, 0, tmp_path / "seed-0", dataset=dataset, agents_per_node=30)
    assert files.n_nodes == 3  # two shards of 30 users and the coordinator
    started = []
    with Deployment(files, tmp_path) as dep:
        started = [p.pid for p in dep.processes]
        lines = []
        results = dep.run(rounds=2, timeout=180, on_round=lines.append)
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

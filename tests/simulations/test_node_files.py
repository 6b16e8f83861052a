"""Node files (users' records, the coordinator's token) are 0600 in a 0700 folder and go after the run."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from agents.errors import ConfigError
from agents.node import load_node_file, write_users_file
from simulations import engine
from simulations.flower import backend, deploy
from simulations.flower.files import node_files_removed, prepare_run, remove_node_files
from simulations.flower.inprocess import InProcessDeployment as _InProcess, run_in_process
from simulations.scenario import Scenario, load_scenario

TOY = Scenario(name="toy-files").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "random"), collective__alphas=(0.3,),
    collective__budgets=(0.5,), engine__n_jobs=1, collective__validation=0.0,
)


@pytest.fixture(scope="module")
def dataset():
    return engine.load_data(TOY, seed=0)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask():
    """The most permissive umask: the modes come from the code, not from the user's umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_node_files_and_the_firms_file_are_readable_by_their_owner_only(dataset, tmp_path, open_umask):
    files = prepare_run(TOY, 0, tmp_path / "run", dataset=dataset, agents_per_node=25)
    assert files.n_nodes == 4  # 60 users in shards of 25, and the coordinator
    assert mode(files.run_dir) == 0o700  # a run folder we create
    assert mode(files.node_data_dir) == 0o700
    assert [mode(p) for p in files.node_files] == [0o600] * files.n_nodes
    assert mode(files.run_dir / "firm.npz") == 0o600
    assert sorted(p.name for p in files.node_data_dir.iterdir()) == [f"node-{i}.npz" for i in range(4)]  # no temp


def test_a_rerun_into_a_folder_left_open_closes_it(dataset, tmp_path, open_umask):
    os.chmod(tmp_path, 0o755)
    (tmp_path / "nodes").mkdir(mode=0o777)
    (tmp_path / "nodes" / "node-0.npz").write_bytes(b"old")
    os.chmod(tmp_path / "nodes" / "node-0.npz", 0o666)
    (tmp_path / "firm.npz").write_bytes(b"old")
    os.chmod(tmp_path / "firm.npz", 0o644)
    files = prepare_run(TOY, 0, tmp_path, dataset=dataset, agents_per_node=30)
    assert mode(tmp_path) == 0o755  # a folder given to us is left as it is
    assert mode(files.node_data_dir) == 0o700
    assert [mode(p) for p in files.node_files] == [0o600] * 3
    assert mode(tmp_path / "firm.npz") == 0o600
    assert load_node_file(files.node_files[0]).user_ids.size == 30


@pytest.mark.parametrize("run_mode", ["evaluate", "deploy"])
def test_the_serverapps_results_and_labels_are_readable_by_their_owner_only(dataset, tmp_path, open_umask, run_mode):
    """labels.npz holds a label per user (the evaluator's: true labels too): 0600, also over an older open file."""
    one_cell = TOY.replace(collective__methods=("random",))  # a deployment runs one cell
    files = prepare_run(one_cell, 0, tmp_path, dataset=dataset, agents_per_node=30)
    for name in ("labels.npz", "results.json"):
        (tmp_path / name).write_bytes(b"old")
        os.chmod(tmp_path / name, 0o644)
    run_in_process(files, rounds=1, mode=run_mode)
    assert mode(tmp_path / "results.json") == 0o600 and mode(tmp_path / "labels.npz") == 0o600
    assert np.load(tmp_path / "labels.npz")["labels"].shape == ((1 if run_mode == "deploy" else 2), 60)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_node_file_is_written_whole_or_not_at_all(tmp_path, monkeypatch, open_umask):
    args = dict(user_ids=np.arange(3), X=np.zeros((3, 2)), a=np.zeros(3), y=np.ones(3), membership_key=1, tie_key=2)
    path = write_users_file(tmp_path / "new" / "me.npz", **args)
    assert mode(tmp_path / "new") == 0o700 and mode(path) == 0o600
    before = path.read_bytes()

    def broken(fh, **arrays):
        fh.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError):
        write_users_file(path, **{**args, "user_ids": np.arange(3) + 10})
    assert path.read_bytes() == before  # the old file is untouched, no temporary file is left
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["me.npz"]


def test_the_cleanup_removes_nodes_only_also_when_the_run_fails(dataset, tmp_path):
    files = prepare_run(TOY, 0, tmp_path / "ok", dataset=dataset, agents_per_node=20)
    with node_files_removed(files):
        results = run_in_process(files, rounds=1)
    assert results["connected_nodes"] == files.n_nodes
    assert not files.node_data_dir.exists() and not any(p.exists() for p in files.node_files)
    assert (files.run_dir / "results.json").exists() and (files.run_dir / "firm.npz").exists()
    remove_node_files(files)  # twice is fine

    failing = prepare_run(TOY, 0, tmp_path / "fails", dataset=dataset, agents_per_node=20)
    with pytest.raises(RuntimeError, match="boom"), node_files_removed(failing):
        raise RuntimeError("boom")
    assert not failing.node_data_dir.exists()

    kept = prepare_run(TOY, 0, tmp_path / "kept", dataset=dataset, agents_per_node=20)
    with node_files_removed(kept, keep=True):
        run_in_process(kept, rounds=1)
    assert all(p.exists() for p in kept.node_files)


class InProcessSession:
    """A session for ``backend.run_seed`` that runs the federation in this process."""

    def __init__(self, workdir, *, fail=False):
        self.workdir, self.fail, self.seen = Path(workdir), fail, []

    def run(self, files, *, rounds, timeout, on_round=None):
        self.seen.append(files)
        assert all(p.exists() for p in files.node_files)  # present while the federation runs
        if self.fail:
            raise RuntimeError("the SuperLink went away")
        return run_in_process(files, rounds=rounds)


def test_the_flower_backend_removes_each_seeds_node_files(dataset, tmp_path):
    session = InProcessSession(tmp_path)
    frame = backend.run_seed(TOY, 0, dataset=dataset, session=session)
    assert len(frame) == 3 and (frame["backend"] == "flower").all()
    (files,) = session.seen
    assert not files.node_data_dir.exists() and (files.run_dir / "results.json").exists()

    failing = InProcessSession(tmp_path, fail=True)
    with pytest.raises(RuntimeError, match="went away"):
        backend.run_seed(TOY, 0, dataset=dataset, session=failing)
    assert not failing.seen[0].node_data_dir.exists()

    keeping = InProcessSession(tmp_path)
    backend.run_seed(TOY.replace(flower__keep_node_files=True), 0, dataset=dataset, session=keeping)
    assert all(p.exists() for p in keeping.seen[0].node_files)


def test_keep_node_files_is_a_checked_option(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('name = "t"\n[flower]\nkeep-node-files = true\n')
    assert load_scenario(cfg).flower.keep_node_files is True
    assert Scenario().flower.keep_node_files is False
    cfg.write_text('name = "t"\n[flower]\nkeep-node-files = "yes"\n')
    with pytest.raises(ConfigError, match="keep-node-files"):
        load_scenario(cfg)


class InProcessDeployment(_InProcess):
    """The in-process stand-in, checking the node files are there and able to fail."""

    fail = False

    def run(self, **kw):
        assert all(p.exists() for p in self.files.node_files)
        if self.fail:
            raise RuntimeError("a SuperNode died")
        return super().run(**kw)


def test_deploy_removes_the_node_files_unless_kept(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(deploy, "Deployment", InProcessDeployment)
    nodes = deploy.results_path_of(tmp_path / "w", 0).parent / "nodes"
    frame, results = deploy.deploy_seed(TOY, 0, tmp_path / "w", dataset=dataset, agents_per_node=30, mode="evaluate")
    assert len(frame) == 3 and not nodes.exists()
    deploy.deploy_seed(TOY, 0, tmp_path / "w", dataset=dataset, agents_per_node=30, keep_node_files=True,
                       mode="evaluate")
    # a deployment's users hold raw records and the collective's invitation, as devices do
    assert sorted(p.name for p in nodes.iterdir()) == ["collective.json", "node-0.csv", "node-1.csv", "node-2.npz"]
    monkeypatch.setattr(InProcessDeployment, "fail", True)
    with pytest.raises(RuntimeError, match="SuperNode died"):
        deploy.deploy_seed(TOY, 0, tmp_path / "w", dataset=dataset, agents_per_node=30, mode="evaluate")
    assert not nodes.exists()


def test_deploy_cli_keeps_node_files_only_when_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(deploy, "Deployment", InProcessDeployment)
    cfg = tmp_path / "toy.toml"
    cfg.write_text('name = "t"\nseeds = [0]\n[data]\ndataset = "toy"\n[data.options]\nn = 86\n'
                   '[collective]\nmethods = ["random"]\nalphas = [0.5]\nbudgets = [1.0]\n')
    work = tmp_path / "w"
    nodes = work / "seed-0" / "nodes"
    assert deploy.main([str(cfg), "--agents-per-node", "30", "--workdir", str(work)]) == 0
    assert not nodes.exists() and "node files: removed" in capsys.readouterr().out
    assert deploy.main([str(cfg), "--agents-per-node", "30", "--workdir", str(work), "--keep-node-files"]) == 0
    assert len(list(nodes.iterdir())) == 4 and f"node files: kept in {nodes}" in capsys.readouterr().out
    remove_node_files(deploy.RunFiles(work / "seed-0", ()))
    # --print-commands: the user starts the nodes, so the files stay, 0600, and the way to remove them is printed
    assert deploy.main([str(cfg), "--agents-per-node", "30", "--workdir", str(work), "--print-commands"]) == 0
    out = capsys.readouterr().out
    assert [mode(p) for p in sorted(nodes.iterdir())] == [0o600] * 4 and mode(nodes) == 0o700
    assert f"rm -r {nodes.resolve()}" in out

"""A real SuperLink and three SuperNodes on loopback give the vectorised engine's results,
over TLS with SuperNode authentication; a SuperNode without a registered key or without
the root certificate does not get in."""

import json
import subprocess

import httpx
import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.proto.fleet_pb2 import PullMessagesRequest
from flwr.proto.node_pb2 import Node
from flwr.supernode.fleet_http_client import FleetHttpClient
from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

from simulations import engine
from simulations.flower import deploy
from simulations.flower.deploy import CONNECTION, Deployment, main, node_commands
from simulations.flower.files import prepare_run, results_frame
from simulations.flower.inprocess import InProcessDeployment
from simulations.flower.processes import alive, flwr_bin, free_port, process_tree, stop_process
from simulations.flower.tls import make_node_key, make_server_tls
from simulations.scenario import Scenario
from simulations.state import build_world

TOY = Scenario(name="toy-deploy").replace(
    seeds=(0,), data__dataset="toy", data__options={"n": 86},
    collective__methods=("rb-prob", "rb-dist", "random"), collective__alphas=(0.3, 0.6),
    collective__budgets=(0.2, 1.0, 7), engine__n_jobs=1, collective__validation=0.0,
)


def test_node_commands_name_each_nodes_file(tmp_path):
    files = prepare_run(TOY, 0, tmp_path, agents_per_node=30)
    keys = [tmp_path / f"k{i}" for i in range(3)]
    cmds = node_commands(files, 9091, [9100, 9101, 9102], root_certificates=tmp_path / "ca.crt", private_keys=keys)
    assert len(cmds) == 3
    for i, cmd in enumerate(cmds):
        assert cmd[cmd.index("--superlink") + 1] == "127.0.0.1:9091"
        assert cmd[cmd.index("--port") + 1] == str(9100 + i)
        assert f'data-path="{files.node_files[i]}"' in cmd[cmd.index("--node-config") + 1]
        assert cmd[cmd.index("--root-certificates") + 1] == str(tmp_path / "ca.crt")
        assert cmd[cmd.index("--auth-supernode-private-key") + 1] == str(keys[i])  # its own key
        assert "--insecure" not in cmd
    insecure = node_commands(files, 9091, [9100, 9101, 9102], root_certificates=None)
    assert all("--insecure" in cmd and "--root-certificates" not in cmd for cmd in insecure)
    with pytest.raises(ValueError, match="needs TLS"):  # Flower refuses node auth without TLS
        node_commands(files, 9091, [9100, 9101, 9102], root_certificates=None, private_keys=keys)
    with pytest.raises(ValueError, match="2 private keys for 3 nodes"):
        node_commands(files, 9091, [9100, 9101, 9102], root_certificates=tmp_path / "ca.crt", private_keys=keys[:2])


def test_print_commands(tmp_path, capsys):
    cfg = tmp_path / "toy.toml"
    cfg.write_text('name = "t"\nseeds = [0]\n[data]\ndataset = "toy"\n[data.options]\nn = 86\n'
                   '[collective]\nmethods = ["random"]\nalphas = [0.5]\nbudgets = [1.0]\n')
    work = tmp_path / "w"
    assert main([str(cfg), "--agents-per-node", "30", "--workdir", str(work), "--print-commands"]) == 0
    out = capsys.readouterr().out
    assert out.count("flower-supernode") == 3 and "flower-superlink" in out and "flwr run" in out
    assert "--insecure" not in out and "insecure = true" not in out
    link = next(line for line in out.splitlines() if "flower-superlink" in line)
    assert f"--ssl-ca-certfile {work}/tls/ca.crt --ssl-certfile {work}/tls/server.crt" in link
    assert "--enable-supernode-auth" in link
    for i in range(3):
        assert f"supernode register {work}/keys/node-{i}.pub {CONNECTION}" in out
        assert (f"--root-certificates {work}/tls/ca.crt --auth-supernode-private-key {work}/keys/node-{i} "
                f"--superlink 127.0.0.1:9091 --port {9100 + i}") in out
    assert f'root-certificates = "{work}/tls/ca.crt"' in out  # the flwr CLI's connection
    assert sorted(p.name for p in (work / "tls").iterdir()) == ["ca.crt", "server.crt", "server.key"]  # no CA key
    assert {oct(p.stat().st_mode & 0o777) for p in [*(work / "tls").iterdir(), *(work / "keys").iterdir()]} == {"0o600"}
    assert main([str(cfg), "--agents-per-node", "30", "--workdir", str(work), "--print-commands", "--insecure"]) == 0
    out = capsys.readouterr().out
    assert out.count("--insecure") == 4 and "insecure = true" in out and "register" not in out
    assert main([str(cfg), "--agents-per-node", "0", "--print-commands"]) == 2
    assert main([str(cfg), "--rounds", "0"]) == 2  # refused before anything starts
    assert "--rounds 0" in capsys.readouterr().err




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
    with Deployment(files, tmp_path, evaluator=True) as dep:  # the owners consent to the evaluator
        assert "--enable-supernode-auth" in dep.processes[0].args and "--insecure" not in dep.processes[0].args
        assert len(set(dep.node_ids)) == 3  # each node's key registered before it started
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
    assert not [key.private for key in dep.node_keys if key.private.exists()]  # the private keys are deleted


@pytest.mark.slow
def test_a_deployed_firm_gets_one_label_per_user_and_the_engines_row_of_its_cell(tmp_path):
    """mode = deploy on real processes: one label row, no flips, the engine's metrics for the cell
    (no warm start: the firm fits from scratch); the evaluator on the same nodes sees every row."""
    one = TOY.replace(collective__methods=("rb-prob",), collective__alphas=(0.6,), collective__budgets=(1.0,),
                      engine__warm_start=False)
    dataset = engine.load_data(one, seed=0)
    reference = engine.run_seed(one, 0, dataset=dataset)
    files = prepare_run(one, 0, tmp_path / "seed-0", dataset=dataset, agents_per_node=30)
    with Deployment(files, tmp_path, evaluator=True) as dep:  # the owners consent to the evaluator
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


def supernode(dep, *flags, log):
    """One more SuperNode against ``dep``'s SuperLink, giving up fast."""
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [flwr_bin("flower-supernode"), *flags, "--superlink", f"127.0.0.1:{dep.port}", "--port", str(free_port()),
             "--max-retries", "2", "--max-wait-time", "5"],
            env=dep.env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def exits(proc, log, timeout=60.0) -> str:
    """The log of a SuperNode that gave up with an error (``timeout``: only reached when it got in)."""
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        stop_process(proc, grace=5.0, group=True)  # its SuperExec too
    assert code not in (None, 0), f"{log.name}: {'still connected' if code is None else 'exit 0'}: {log.read_text()}"
    return log.read_text()


@pytest.mark.slow
def test_an_unregistered_or_unverified_supernode_gets_nothing(tmp_path):
    files = prepare_run(TOY, 0, tmp_path / "seed-0", agents_per_node=30)
    stranger = make_node_key(tmp_path / "stranger", "node")
    other_ca = make_server_tls(tmp_path / "other-tls")
    with Deployment(files, tmp_path) as dep:
        ca, registered = ["--root-certificates", str(dep.tls.ca_cert)], str(dep.node_keys[0].private)
        intruders = {  # started together, each gives up on its own
            "stranger": ca + ["--auth-supernode-private-key", str(stranger.private)],  # an unregistered key
            "keyless": ca,  # no key: it would register itself, which node auth turns off
            "system-ca": ["--auth-supernode-private-key", registered],  # a registered key, trusting the system CAs
            "other-ca": ["--root-certificates", str(other_ca.ca_cert), "--auth-supernode-private-key", registered],
        }
        procs = {name: supernode(dep, *flags, log=tmp_path / f"{name}.log") for name, flags in intruders.items()}
        out = {name: exits(proc, tmp_path / f"{name}.log") for name, proc in procs.items()}
        assert "Failed to activate SuperNode" in out["stranger"]
        assert "SuperNode authentication is enabled" in out["keyless"]
        assert "CERTIFICATE_VERIFY_FAILED" in out["system-ca"] and "CERTIFICATE_VERIFY_FAILED" in out["other-ca"]
        # the stranger's key claiming a registered node's id gets no messages; that node's own key does
        def pull_as(key_path):
            key = load_ssh_private_key(key_path.read_bytes(), None)
            with FleetHttpClient.from_server_address(f"127.0.0.1:{dep.port}", False, dep.tls.ca_cert.read_bytes(),
                                                     interceptors=[NodeAuthHttpInterceptor(key, key.public_key())]) as c:
                return c.PullMessages(PullMessagesRequest(node=Node(node_id=dep.node_ids[0])))

        with pytest.raises(httpx.HTTPStatusError) as err:
            pull_as(stranger.private)
        assert err.value.response.status_code == 401
        assert list(pull_as(dep.node_keys[0].private).messages_list) == []  # accepted: no run, nothing to pull
        listed = json.loads(dep._flwr("supernode", "ls", CONNECTION, "--format", "json", timeout=60).stdout)["nodes"]
        assert sorted(int(n["node-id"]) for n in listed) == sorted(dep.node_ids)  # nobody else got in


def test_sigterm_stops_the_deployment_and_removes_its_files_in_one_line(tmp_path, monkeypatch, capsys):
    """SIGTERM is handled like Ctrl-C: the Deployment's and the node files' context managers run
    (the nodes stop, the records go), and the command says so in one line, exit 143."""
    import os
    import signal

    closed = []

    class Dying(InProcessDeployment):
        def run(self, **kw):
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill <pid>` would, mid-run
            raise AssertionError("not reached")

        def __exit__(self, *exc):
            closed.append(exc[0])
            return False

    monkeypatch.setattr(deploy, "Deployment", Dying)
    cfg = tmp_path / "toy.toml"
    cfg.write_text('name = "t"\nseeds = [0]\n[data]\ndataset = "toy"\n[data.options]\nn = 86\n'
                   '[collective]\nmethods = ["rb-prob"]\nalphas = [0.6]\nbudgets = [1.0]\n')
    work = tmp_path / "w"
    assert main([str(cfg), "--agents-per-node", "30", "--workdir", str(work)]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err
    assert closed and issubclass(closed[0], KeyboardInterrupt)  # the deployment was closed on the way out
    assert not list(work.rglob("node-*.csv"))  # the users' records are gone
    assert signal.getsignal(signal.SIGTERM) is not None and signal.getsignal(signal.SIGTERM) != deploy.on_sigterm

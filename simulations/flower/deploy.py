"""Deployment: a real ``flower-superlink`` and one ``flower-supernode`` per node.

Each SuperNode loads one user's (or one shard's) records from the file named in
its node config (``data-path``): by default, as on a device, its raw records as a
CSV plus the collective's invitation (``collective``), encoded on the node with
the encoding the firm publishes (``--device-files npz``: encoded centrally). One
extra SuperNode is the coalition's coordinator. The same Flower app as the
simulation runs against them with
``flwr run``. Everything listens on 127.0.0.1 and goes over TLS with Flower's
SuperNode authentication: the work folder gets a fresh CA and SuperLink
certificate and one key pair per SuperNode (:mod:`.tls`), each node's public
key is registered with the SuperLink (``flwr supernode register``) before the
node starts, and the SuperLink admits no other node. ``insecure=True``
(``--insecure``) drops both, for loopback debugging only.
``collective-fairness-deploy`` (:func:`main`) runs one seed this way
and prints the same table as the other backends; ``--print-commands`` only
prints the shell commands. The node files (users' records, the coordinator's
token) are written 0600 and removed after the run, also when it fails, unless
``--keep-node-files``; with ``--print-commands`` they stay (the user starts the
nodes) and the last printed line removes them, and so do the certificates and
keys it makes for the printed commands (``<workdir>/tls``, ``<workdir>/keys``).

Who plays the ServerApp's collection role (run config ``mode``): by default
the **firm** (``mode = "deploy"``): every node reports one label per user,
the label the collective's deployed cell gives, so the scenario's grid must
hold exactly one cell (``--cell METHOD:ALPHA:BUDGET`` picks one); the firm
trains on those labels and cannot count flips. ``--evaluate`` runs the
experimenter's evaluator instead (``mode = "evaluate"``: every node sends its
true labels and one reported row per cell): a loopback view of the whole grid
for experiments, never what a real firm receives.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from agents.errors import CollectiveFairnessError, ConfigError, DataError

from ..cli import ArgumentParser, Terminated, install_signal, int_argument, on_sigterm, restore_signal

from .files import DEVICE_FILES, RoundWatch, RunFiles, node_files_removed, prepare_run, results_frame
from .processes import (
    FlwrProcesses,
    app_pyproject,
    config_args,
    flower_env,
    flwr_bin,
    free_port,
    results_complete,
    run_status,
    shell_quote,
    stop_process,
    wait_http_ok,
)
from .tls import NodeKey, ServerTls, make_node_key, make_server_tls

__all__ = ["Deployment", "connection_toml", "deploy_seed", "main", "node_commands", "superlink_command"]

CONNECTION = "deploy"


def node_commands(files: RunFiles, superlink_port: int, node_ports, *, root_certificates,
                  private_keys=None, evaluator: bool = False) -> list[list[str]]:
    """The ``flower-supernode`` command of every node.

    ``root_certificates``: the deployment's CA certificate, which the node checks
    the SuperLink's certificate against; ``private_keys``: node i's private key
    (SuperNode authentication), one per node. ``root_certificates=None`` means
    ``--insecure`` (loopback debugging only; Flower refuses keys without TLS).
    ``evaluator``: the nodes' owners consent to answer the experimenter's evaluator
    (node config ``evaluator=true``; off by default, so a firm gets reports only).
    Each node's own Runtime API (where its ClientApp process connects) listens
    on 127.0.0.1 at its ``--port``.
    """
    keys = [None] * files.n_nodes if private_keys is None else [Path(k) for k in private_keys]
    if len(keys) != files.n_nodes:
        raise ValueError(f"{len(keys)} private keys for {files.n_nodes} nodes")
    cmds = []
    for i, (path, port) in enumerate(zip(files.node_files, node_ports)):
        node_config = node_config_arg(files.node_config(i, evaluator=evaluator))
        cmds.append([
            flwr_bin("flower-supernode"), *_node_security_flags(root_certificates, keys[i]),
            "--superlink", f"127.0.0.1:{superlink_port}",
            "--port", str(port), "--node-config", node_config, "--max-retries", "600", "--max-wait-time", "600",
        ])
    return cmds


def node_config_arg(config: dict) -> str:
    """A node config as ``flower-supernode --node-config`` takes it: ``key="text" key=number``."""
    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return f'"{v}"' if isinstance(v, str) else str(v)

    return " ".join(f"{k}={value(v)}" for k, v in config.items())


def _node_security_flags(root_certificates, private_key) -> list[str]:
    if root_certificates is None:
        if private_key is not None:
            raise ValueError("SuperNode authentication needs TLS: give the root certificate")
        return ["--insecure"]
    flags = ["--root-certificates", str(Path(root_certificates))]
    if private_key is not None:
        flags += ["--auth-supernode-private-key", str(private_key)]
    return flags


def superlink_command(port: int, *, tls: ServerTls | None, node_auth: bool = True,
                      database: Path | None = None) -> list[str]:
    """``flower-superlink`` on 127.0.0.1:``port`` (Control, Fleet and Runtime API on one port):
    TLS with ``tls`` and, with ``node_auth``, only registered SuperNodes admitted;
    ``tls=None`` means ``--insecure`` without node auth (loopback debugging only)."""
    security = ["--insecure"] if tls is None else tls.superlink_flags() + (["--enable-supernode-auth"] if node_auth
                                                                            else [])
    cmd = [flwr_bin("flower-superlink"), *security, "--host", "127.0.0.1", "--port", str(port),
           "--disable-runtime-dependency-installation"]
    if database is not None:
        cmd += ["--database", str(database)]
    return cmd


def connection_toml(port: int, ca_cert) -> str:
    """``$FLWR_HOME/config.toml`` naming the deployment's SuperLink as the ``flwr`` CLI's
    default connection: checked against ``ca_cert``, or ``insecure = true`` when it is None."""
    security = "insecure = true" if ca_cert is None else f"root-certificates = {json.dumps(str(ca_cert))}"
    return (f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{port}"\n{security}\n')


class Deployment(FlwrProcesses):
    """A SuperLink and one SuperNode per node file, all on 127.0.0.1, stopped on exit.

    TLS and SuperNode authentication unless ``insecure``: :meth:`start` makes a
    CA + SuperLink certificate in ``<workdir>/tls`` and a key pair per node in
    ``<workdir>/keys`` (all 0600), registers every node's public key, then starts
    the nodes; :meth:`close` stops everything and deletes the private keys.
    """

    def __init__(self, files: RunFiles, workdir, *, superlink_port: int | None = None, insecure: bool = False,
                 evaluator: bool = False):
        self.files = files
        self.workdir = Path(workdir).resolve()
        self.home = self.workdir / "home"
        self.app_dir = self.workdir / "app"
        self.port = superlink_port or free_port()
        self.node_ports = [free_port() for _ in files.node_files]
        self.env = flower_env(self.home)
        self.processes: list[subprocess.Popen] = []
        self.insecure = bool(insecure)
        self.evaluator = bool(evaluator)  # nodes answer evaluate.cells (the experimenter's loopback view)
        self.tls: ServerTls | None = None
        self.node_keys: list[NodeKey] = []
        self.node_ids: list[int] = []

    def _spawn(self, cmd: list[str], log_name: str) -> subprocess.Popen:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / log_name, "ab") as log:
            proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # own process group: stopped with its children
        self.processes.append(proc)
        return proc

    def start(self) -> "Deployment":
        self.home.mkdir(parents=True, exist_ok=True)
        self.app_dir.mkdir(parents=True, exist_ok=True)
        (self.app_dir / "pyproject.toml").write_text(app_pyproject(), encoding="utf-8")
        try:
            if not self.insecure:
                self.tls = make_server_tls(self.workdir / "tls")
                self.node_keys = [make_node_key(self.workdir / "keys", f"node-{i}") for i in range(self.files.n_nodes)]
            ca_cert = self.tls.ca_cert if self.tls else None
            (self.home / "config.toml").write_text(connection_toml(self.port, ca_cert), encoding="utf-8")
            link = self._spawn(superlink_command(self.port, tls=self.tls), "superlink.log")
            wait_http_ok(f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/health", time.monotonic() + 60,
                         link, ca_cert=ca_cert)
            self.node_ids = self.register_nodes([k.public for k in self.node_keys])
            for i, cmd in enumerate(node_commands(self.files, self.port, self.node_ports, root_certificates=ca_cert,
                                                  private_keys=[k.private for k in self.node_keys] or None,
                                                  evaluator=self.evaluator)):
                self._spawn(cmd, f"supernode-{i}.log")
        except BaseException:
            self.close()
            raise
        return self

    def register_nodes(self, public_keys) -> list[int]:
        """Register SuperNode public keys with the SuperLink (``flwr supernode register``, a few at
        a time: each is a Python process); their node ids, in order. Only a registered key can
        activate a node when node auth is on, and each key can hold one node."""
        from concurrent.futures import ThreadPoolExecutor

        def register(path) -> int:
            proc = self._flwr("supernode", "register", str(path), CONNECTION, "--format", "json", timeout=60)
            try:
                return int(json.loads(proc.stdout)["node-id"])
            except (ValueError, KeyError, TypeError):
                raise RuntimeError(f"flwr supernode register {path} failed: {proc.stdout.strip()} "
                                   f"{proc.stderr.strip()[-1000:]}") from None

        if not public_keys:
            return []
        with ThreadPoolExecutor(max_workers=min(4, len(public_keys))) as pool:
            return list(pool.map(register, public_keys))

    def close(self) -> None:
        # Nodes first, so they do not spin retrying a SuperLink that is gone.
        for proc in reversed(self.processes):
            stop_process(proc, grace=5.0, group=True)  # each has its own process group (_spawn)
        self.processes = []
        # The SuperLink's registrations (in memory) are gone, so the keys are of no more use.
        for key in self.node_keys:
            key.private.unlink(missing_ok=True)
        if self.tls is not None:
            self.tls.server_key.unlink(missing_ok=True)

    def run(self, *, rounds: int = 1, timeout: float = 600.0, node_wait: float = 120.0, on_round=None,
            mode: str = "deploy") -> dict:
        """``flwr run`` the app against the nodes and wait for the ServerApp's results;
        ``on_round(line)`` hears about every round as it finishes. ``mode``: ``"deploy"``
        (the firm only) or ``"evaluate"`` (the experimenter's evaluator)."""
        results_path = self.files.run_dir / "results.json"
        results_path.unlink(missing_ok=True)
        run_config = {"run-dir": str(self.files.run_dir), "rounds": int(rounds), "expected-nodes": self.files.n_nodes,
                      "node-wait": float(node_wait), "round-timeout": float(timeout), "mode": str(mode)}
        proc = self._flwr("run", ".", CONNECTION, "--format", "json", "--run-config", config_args(run_config))
        import json

        try:
            run_id = json.loads(proc.stdout)["run-id"]
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(f"flwr run failed: {proc.stdout.strip()} {proc.stderr.strip()[-2000:]}") from None
        deadline = time.monotonic() + node_wait + timeout * (5 * rounds) + 120
        status, next_status = "", time.monotonic() + 10
        watch = RoundWatch(results_path, rounds, on_round)
        while time.monotonic() < deadline:
            watch.poll()
            if results_complete(results_path):
                watch.poll()
                return json.loads(results_path.read_text(encoding="utf-8"))
            if time.monotonic() >= next_status:
                status = run_status(self._flwr, CONNECTION, run_id)
                next_status = time.monotonic() + 10
                if status.startswith("finished") and not results_complete(results_path):
                    break
            time.sleep(0.2)
        else:
            self._flwr("stop", str(run_id), CONNECTION, timeout=60)
        logs = self._flwr("log", str(run_id), CONNECTION, "--show", timeout=60)
        raise RuntimeError(f"deployed run {run_id} ended as {status or 'timed out'!r}; log tail:\n"
                           f"{(logs.stdout + logs.stderr)[-3000:]}")


def deploy_seed(scenario, seed: int, workdir, *, agents_per_node: int | None = None, rounds: int | None = None,
                dataset=None, timeout: float | None = None, on_round=None, mode: str = "deploy",
                device_files: str = "raw",
                keep_node_files: bool | None = None, insecure: bool = False) -> tuple[pd.DataFrame, dict]:
    """Run one seed on a local deployment; returns the engine's rows and the raw results.

    ``mode = "deploy"`` (the firm only; the scenario must hold exactly one cell: one row,
    flips unknown) or ``"evaluate"`` (the experimenter's evaluator: every cell, as the
    other backends).

    TLS and SuperNode authentication unless ``insecure`` (loopback debugging only).

    The node files are removed when the run ends (also when it fails) unless ``keep_node_files``
    (default: ``[flower] keep-node-files``)."""
    from ..engine import load_data

    check_mode(scenario, mode)  # before any file is written or process started
    dataset = dataset if dataset is not None else load_data(scenario, seed=seed)
    workdir = Path(workdir).resolve()
    files = prepare_run(scenario, seed, results_path_of(workdir, seed).parent, dataset=dataset,
                        agents_per_node=agents_per_node, device_files=device_files)
    keep = scenario.flower.keep_node_files if keep_node_files is None else bool(keep_node_files)
    security = {"insecure": True} if insecure else {}  # default: TLS + node auth
    with node_files_removed(files, keep=keep), Deployment(files, workdir, evaluator=mode == "evaluate",
                                                          **security) as dep:  # nodes stop, then files go
        results = dep.run(rounds=rounds or scenario.flower.rounds, timeout=timeout or scenario.flower.timeout,
                          on_round=on_round, mode=mode)
    return results_frame(scenario, dataset, seed, results), results


MODES = ("deploy", "evaluate")


def check_mode(scenario, mode: str) -> None:
    """One clear line unless ``mode`` is known and, for ``deploy``, the grid holds one cell."""
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r}; allowed: {', '.join(MODES)}")
    c = scenario.collective
    n = len(c.methods) * len(c.alphas) * len(c.budgets)
    if mode == "deploy" and n != 1:
        raise ConfigError(f"a deployment runs the one cell the collective deploys, but the scenario's grid has {n} "
                          f"cells ({len(c.methods)} methods x {len(c.alphas)} alphas x {len(c.budgets)} budgets); "
                          "allowed: --cell METHOD:ALPHA:BUDGET (e.g. rb-prob:0.3:0.2), a scenario with one method, one "
                          "alpha and one budget, or --evaluate (the experimenter's loopback view of every cell, not a "
                          "firm's)")


def parse_cell(value: str) -> dict:
    """``METHOD:ALPHA:BUDGET`` as scenario changes (validated by the scenario's own rules): a
    budget with a decimal point or exponent is a fraction of the pool, a whole number a count."""
    allowed = ("allowed: METHOD:ALPHA:BUDGET, e.g. rb-prob:0.3:0.2 (a budget written with a decimal point is a "
               "fraction of the candidate pool, a whole number a count of flips)")
    parts = str(value).split(":")
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise ConfigError(f"--cell {value!r} is not METHOD:ALPHA:BUDGET; {allowed}")
    method, alpha, budget = (p.strip() for p in parts)
    try:
        alpha_value = float(alpha)
        budget_value = int(budget) if budget.lstrip("+-").isdigit() else float(budget)
    except ValueError:
        raise ConfigError(f"--cell {value!r}: alpha {alpha!r} or budget {budget!r} is not a number; {allowed}") from None
    return {"collective__methods": (method,), "collective__alphas": (alpha_value,),
            "collective__budgets": (budget_value,)}


def results_path_of(workdir, seed: int) -> Path:
    """Where a deployment of ``seed`` in ``workdir`` writes the ServerApp's ``results.json``."""
    return Path(workdir).resolve() / f"seed-{seed}" / "results.json"


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="collective-fairness-deploy",
        description="Run one seed of a scenario on a real Flower SuperLink and one SuperNode per node, on 127.0.0.1.",
    )
    p.add_argument("config", nargs="?", help="scenario TOML file (default: the paper's Adult scenario)")
    p.add_argument("--seed", type=int_argument, help="seed (default: the scenario's first)")
    p.add_argument("--agents-per-node", type=int_argument,
                   help="users per SuperNode (default: [flower] agents-per-node)")
    p.add_argument("--rounds", type=int_argument, help="rounds (default: [flower] rounds)")
    p.add_argument("--cell", metavar="METHOD:ALPHA:BUDGET",
                   help="the one cell the collective deploys, e.g. rb-prob:0.3:0.2 (default: the scenario's grid, "
                        "which must then hold one cell)")
    p.add_argument("--evaluate", action="store_true",
                   help="run the experimenter's evaluator instead of the firm: every node sends its true labels and "
                        "one reported row per cell, and every cell is trained (a loopback view for experiments, "
                        "never a real firm's)")
    p.add_argument("--workdir", type=Path, default=Path(".flwr/deploy"),
                   help="node files, FLWR_HOME, logs, the TLS certificates (tls/) and the SuperNodes' keys (keys/)")
    p.add_argument("--insecure", action="store_true",
                   help="no TLS and no SuperNode authentication: loopback debugging only (default: TLS with a fresh "
                        "CA, only registered SuperNodes admitted)")
    p.add_argument("--device-files", choices=DEVICE_FILES, default="raw",
                   help="users' node files: raw (default: each node's raw records as a CSV plus the collective's "
                        "invitation, encoded on the node with the encoding the firm publishes) or npz (encoded "
                        "centrally, as the simulation backend does)")
    p.add_argument("--out", type=Path, help="write the result rows to this CSV file")
    p.add_argument("--print-commands", action="store_true",
                   help="write the node files (and, unless --insecure, the certificates and keys), print the "
                        "commands, exit (the files stay)")
    p.add_argument("--keep-node-files", action="store_true",
                   help="keep the node files (users' records, mode 0600) after the run (default: remove them, "
                        "unless [flower] keep-node-files)")
    return p


def _credentials(workdir: Path, n_nodes: int) -> tuple[ServerTls, list[NodeKey]]:
    """A fresh CA + SuperLink certificate and one key pair per node, for printed commands."""
    try:
        return make_server_tls(workdir / "tls"), [make_node_key(workdir / "keys", f"node-{i}") for i in range(n_nodes)]
    except OSError as exc:
        raise DataError(f"--workdir {str(workdir)!r}: cannot write the certificates and keys ({exc.strerror}); "
                        "allowed: a writable folder") from None


def _checked(args):
    """The scenario with the flags applied, validated by the scenario's own rules, and its data checked."""
    from ..scenario import load_scenario

    scenario = load_scenario(args.config)
    source = str(args.config) if args.config else "default scenario"
    changes, flags = {}, []
    for flag, value, key, change in (("--seed", args.seed, "seeds", (args.seed,)),
                                     ("--agents-per-node", args.agents_per_node, "flower__agents_per_node",
                                      args.agents_per_node),
                                     ("--rounds", args.rounds, "flower__rounds", args.rounds)):
        if value is not None:
            changes[key] = change
            flags.append(f"{flag} {value}")
    if args.cell is not None:
        changes.update(parse_cell(args.cell))
        flags.append(f"--cell {args.cell}")
    if changes:  # validated like the file itself
        source = f"{source} with {' '.join(flags)}"
        scenario = scenario.replace(source, **changes)
    scenario.check_data(source)  # before any node file is written
    return scenario


def main(argv: list[str] | None = None) -> int:
    """The command line; SIGTERM is handled like Ctrl-C, so the SuperLink, the SuperNodes, the
    node files and the private keys go whichever way the command is stopped (one line, no
    traceback)."""
    import signal

    previous = install_signal(signal.SIGTERM, on_sigterm)
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        print("collective-fairness-deploy: interrupted; the SuperLink, the SuperNodes, the node files and the keys "
              "were stopped and removed", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130
    finally:
        restore_signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        from ..engine import load_data

        scenario = _checked(args)
        seed = scenario.seeds[0]
        mode = "evaluate" if args.evaluate else "deploy"
        check_mode(scenario, mode)
        if args.out is not None and (not str(args.out).strip() or args.out.is_dir()):
            raise ConfigError(f"--out {str(args.out)!r}: is a folder or empty; allowed: a CSV file path for the rows")
        if args.print_commands:
            workdir = args.workdir.resolve()
            try:
                files = prepare_run(scenario, seed, workdir / f"seed-{seed}", dataset=load_data(scenario, seed=seed),
                                    agents_per_node=args.agents_per_node, device_files=args.device_files)
            except OSError as exc:
                raise DataError(f"--workdir {str(args.workdir)!r}: cannot write the node files ({exc.strerror}); "
                                "allowed: a writable folder") from None
            port = 9091
            tls, keys = (None, []) if args.insecure else _credentials(workdir, files.n_nodes)
            ca_cert = tls.ca_cert if tls else None
            print("# environment (no network use)")
            # Flower starts its helpers (flower-superexec) by name: its bin folder must be on PATH.
            print("export PATH=" + shell_quote([str(Path(flwr_bin("flwr")).parent)]) + ":\"$PATH\"")
            print("export FLWR_HOME=" + str(workdir / "home") + " FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 "
                  "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1")
            if tls:
                print(f"# TLS: {tls.ca_cert} is the root certificate (every device and the flwr CLI get it); "
                      f"{tls.server_cert} and {tls.server_key} stay with the SuperLink")
                print(f"# node auth: device i keeps {keys[0].private.parent}/node-<i> (private, 0600); "
                      "node-<i>.pub is registered with the SuperLink below")
            print(shell_quote(superlink_command(port, tls=tls)) + " &")
            print("mkdir -p \"$FLWR_HOME\" && cat > \"$FLWR_HOME/config.toml\" <<'EOF'")
            print(connection_toml(port, ca_cert) + "EOF")
            if tls:
                print(f"until curl -sf --cacert {shell_quote([str(ca_cert)])} https://127.0.0.1:{port}/health >/dev/null; "
                      "do sleep 1; done")
                for key in keys:
                    print(shell_quote([flwr_bin("flwr"), "supernode", "register", str(key.public), CONNECTION]))
            for i, cmd in enumerate(node_commands(files, port, [9100 + i for i in range(files.n_nodes)],
                                                  root_certificates=ca_cert,
                                                  private_keys=[k.private for k in keys] or None,
                                                  evaluator=mode == "evaluate")):
                print(shell_quote(cmd) + " &")
            run_config = config_args({"run-dir": str(files.run_dir), "rounds": args.rounds or scenario.flower.rounds,
                                       "expected-nodes": files.n_nodes, "mode": mode})
            print(f"flwr run <app-dir> {CONNECTION} --run-config {shell_quote([run_config])}")
            print("# the node files hold users' records: remove them when the run is over")
            print(f"rm -r {shell_quote([str(files.node_data_dir)])}")
            return 0
        print(f"starting a SuperLink and SuperNodes on 127.0.0.1, "
              f"{'INSECURE (no TLS, no node auth)' if args.insecure else 'TLS + SuperNode authentication'} "
              f"(logs: {args.workdir}/logs)", flush=True)
        frame, results = deploy_seed(scenario, seed, args.workdir, agents_per_node=args.agents_per_node,
                                     rounds=args.rounds, on_round=lambda line: print(line, flush=True), mode=mode,
                                     device_files=args.device_files,
                                     keep_node_files=args.keep_node_files or scenario.flower.keep_node_files,
                                     insecure=args.insecure)
    except CollectiveFairnessError as exc:
        print(f"collective-fairness-deploy: error: {exc}", file=sys.stderr)
        return 2
    print(summary_line(frame, results))
    print(f"results: {Path(results_path_of(args.workdir, seed))} (every round, message counts, rejections, metrics)")
    nodes = Path(results_path_of(args.workdir, seed)).parent / "nodes"
    print(f"node files: kept in {nodes} (users' records: remove them when done)" if nodes.exists()
          else "node files: removed")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
    return 0


def summary_line(frame: pd.DataFrame, results: dict) -> str:
    """What the run shows, honestly for its role: the firm knows what it received and its
    model, not who flipped; the evaluator's loopback view has every cell."""
    head = f"{results['connected_nodes']} nodes, {len(results['rounds'])} rounds in {results.get('seconds', 0):.0f} s"
    if results.get("mode") == "deploy":
        row, got = frame.iloc[0], results["rounds"][-1]["received"]
        groups = ", ".join(f"a={g}: {v['positive']}/{v['users']}" for g, v in got["by_group"].items())
        return (f"{head}; the firm (deployed cell {row['method']}, alpha {row['alpha']:g}, budget {row['budget']:g}) "
                f"received {got['users']} users, {got['positive']} positive labels ({groups}); its model: error "
                f"{row['error']:.3f}, EqOd {row['eqod']:.3f}; flips: unknown to the firm (it sees reported labels only)")
    base = frame[frame["method"] == "base"].iloc[0]
    cells = frame[frame["method"] != "base"]
    best = cells.loc[cells["eqod"].idxmin()] if len(cells) else None
    return (f"{head}; the evaluator (the experimenter's loopback view, not a firm's): base model: error "
            f"{base['error']:.3f}, EqOd {base['eqod']:.3f}; {len(cells)} cells"
            + (f", lowest EqOd {best['eqod']:.3f} ({best['method']}, alpha {best['alpha']:g}, budget "
               f"{best['budget']:g}, {int(best['flips'])} flips)" if best is not None else ""))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""The ``collective-fairness`` command line.

Every bad input is one line on stderr (``collective-fairness: error: ...``) and exit
code 2, with nothing written. Interrupting (Ctrl-C, SIGTERM) stops the worker
processes and backends before exiting; the same command resumes.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path

from agents.errors import CollectiveFairnessError, ConfigError

from .backends import BACKENDS

__all__ = ["ArgumentParser", "int_argument", "main"]

DEFAULT_OUT = Path("results")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes are a :class:`ConfigError`: one line, exit code 2, no usage block.

    Subcommand parsers are of the same class (argparse builds them with ``type(self)``).
    """

    def error(self, message: str):
        where, _, what = message.removeprefix("argument ").partition(": ")
        line = f"{where}: {what}" if what else message
        raise ConfigError(f"{line}; allowed: see '{self.prog} --help'")


def int_argument(text: str) -> int:
    """An int flag value written with ASCII digits (``int()`` also takes '1_0' and other scripts' digits)."""
    if not re.fullmatch(r"[+-]?[0-9]+", text.strip()):
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="collective-fairness",
        description="Minority algorithmic collective action: run scenarios and report results.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a scenario (default: the paper's experiment on Adult)")
    run.add_argument("config", nargs="?", help="scenario TOML file (see configs/)")
    run.add_argument("--out", help="results folder (default: results/<scenario name>)")
    run.add_argument("--seeds", help="comma-separated seeds, overriding the scenario's")
    run.add_argument("--backend", choices=tuple(BACKENDS), help="override [engine] backend")
    run.add_argument("--jobs", type=int_argument, help="worker processes for the firm's fits (default: [engine] n_jobs)")
    run.add_argument("--fresh", action="store_true", help="discard checkpoints instead of resuming")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG figures and report.html (the CSV files are written)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    rep = sub.add_parser("report", help="summarise a results folder and redraw its figures")
    rep.add_argument("results", type=Path, help="results folder (or its runs.csv)")

    swp = sub.add_parser("sweep", help="run a [dynamics] scenario over two parameters: phase diagrams")
    swp.add_argument("config", type=Path, help="scenario TOML file with a [sweep] table (see configs/sweeps/)")
    swp.add_argument("--out", help="folder of the sweep (default: results/<scenario name>)")
    swp.add_argument("--seeds", help="comma-separated seeds, overriding the scenario's")
    swp.add_argument("--jobs", type=int_argument, help="worker processes for the firm's fits")
    swp.add_argument("--fresh", action="store_true", help="discard checkpoints instead of resuming")
    swp.add_argument("--quiet", action="store_true", help="no progress bars")

    val = sub.add_parser("validate", help="check scenario files and their data without running them")
    val.add_argument("configs", nargs="+", type=Path)

    paper = sub.add_parser("paper", help="the paper's findings on every available dataset, one report")
    paper.add_argument("--out", help="folder for every dataset's results and report.html (default: results/paper)")
    paper.add_argument("--seeds", help="comma-separated seeds, overriding the scenarios' (e.g. 0,1,2,3,4,5,6,7,8,9)")
    paper.add_argument("--datasets", help="comma-separated names of configs/paper/*.toml (default: all)")
    paper.add_argument("--fresh", action="store_true", help="discard checkpoints instead of resuming")
    paper.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _seeds(text: str) -> tuple[int, ...]:
    """Parse ``--seeds``; their range and repeats are checked by the scenario's seeds rule."""
    parts = [s.strip() for s in text.split(",") if s.strip()]
    if not parts or not all(re.fullmatch(r"[0-9]+", s) for s in parts):
        raise ConfigError(f"--seeds {text!r}: not a list of seeds; allowed: comma-separated ints >= 0, e.g. 0,1,2")
    return tuple(int(s) for s in parts)


def _out_folder(out: str | Path, flag: bool) -> Path:
    where = f"--out {str(out)!r}" if flag else str(out)
    if not str(out).strip():  # Path("") would be the current folder
        raise ConfigError(f"{where}: an empty path; allowed: a folder path (default: results/<scenario name>)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{where}: is a file, not a folder; allowed: a new folder or a results folder")
    return out


def _run(args) -> int:
    from .results import ResultsFolder
    from .runner import run_into
    from .scenario import check_n_jobs, load_scenario

    scenario = load_scenario(args.config)
    source = str(args.config) if args.config else "default scenario"
    changes, flags = {}, []
    if args.seeds is not None:
        changes["seeds"] = _seeds(args.seeds)
        flags.append(f"--seeds {args.seeds}")
    if args.backend:
        changes["engine__backend"] = args.backend
        flags.append(f"--backend {args.backend}")
    if changes:  # validated like the file itself
        source = f"{source} with {' '.join(flags)}"
        scenario = scenario.replace(source, **changes)
    if args.jobs is not None:
        check_n_jobs("--jobs", args.jobs)
    out = _out_folder(args.out, True) if args.out is not None else _out_folder(DEFAULT_OUT / scenario.name, False)
    scenario.check_data(source)  # before anything is written
    folder = ResultsFolder(out)
    try:
        folder.holds(scenario, fresh=args.fresh)  # a folder of another scenario: refused before it is locked
    except OSError as exc:
        raise folder.unwritable(exc) from None
    _, summary = run_into(scenario, out, fresh=args.fresh, n_jobs=args.jobs,
                          progress=not args.quiet, plots=not args.no_plots)
    print(summary)
    rounds = ", rounds.csv: every round" if scenario.dynamics is not None else ""
    print(f"\nresults: {out}/runs.csv (summary.txt, figures *.png{rounds})")
    return 0


def _report(args) -> int:
    from .analysis import comparison_sections, plot_all, write_html, write_summary
    from .analysis.rounds import SUMMARY_FILE, report_rounds
    from .results import ResultsFolder

    folder = ResultsFolder.open(args.results)
    runs = folder.runs()
    try:
        print(write_summary(runs, folder.path))
        figures = plot_all(runs, folder.path)
        trajectories, sections = report_rounds(folder)  # a [dynamics] run's rounds.csv: per-round summary
        if folder.rounds_csv.exists():
            print(f"per-round summary: {folder.path / SUMMARY_FILE}")
        figures += trajectories
        for path in figures:
            print(f"figure: {path}")
        sections = [*sections, *comparison_sections(runs)]
        print(f"report: {write_html(folder, runs, figures, sections=sections)}")
    except OSError as exc:
        raise folder.unwritable(exc) from None
    return 0


def _sweep(args) -> int:
    from .scenario import check_n_jobs
    from .sweeps import load_sweep, run_sweep

    sweep = load_sweep(args.config)
    seeds = _seeds(args.seeds) if args.seeds is not None else None
    if args.jobs is not None:
        check_n_jobs("--jobs", args.jobs)
    out = _out_folder(args.out, True) if args.out is not None else _out_folder(DEFAULT_OUT / sweep.name, False)
    table = run_sweep(sweep, out, seeds=seeds, fresh=args.fresh, n_jobs=args.jobs, progress=not args.quiet)
    print(f"{len(sweep.points())} combinations, {table['seed'].nunique()} seeds: {out}/report.html "
          "(phase.csv, sweep_rounds.csv, phase_*.png)")
    return 0


def _paper(args) -> int:
    from .paper import run_paper

    out = _out_folder(args.out, True) if args.out is not None else _out_folder(DEFAULT_OUT / "paper", False)
    seeds = _seeds(args.seeds) if args.seeds is not None else None
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None
    report = run_paper(out, seeds=seeds, datasets=datasets, fresh=args.fresh, progress=not args.quiet)
    print(f"\nreport: {report} (claims.csv beside it; one results folder per dataset)")
    return 0


def _validate(args) -> int:
    from .scenario import load_scenario

    for path in args.configs:
        scenario = load_scenario(path)
        scenario.check_data(str(path))  # the data files and column values, as `run` would load them
        c = scenario.collective
        n = len(scenario.seeds) * len(c.methods) * len(c.alphas) * len(c.budgets)
        extra = ""
        if scenario.baselines is not None:
            extra += f", baselines: {', '.join(scenario.baselines.methods)}"
        if scenario.defence is not None:
            d = scenario.defence
            extra += f", defence: {'/'.join(d.audits)} x {'/'.join(d.actions)}{' + adaptive' if d.adaptive else ''}"
        if scenario.dynamics is not None:
            d = scenario.dynamics
            extra += (f", dynamics: {d.rounds} rounds, {d.participation} participation, "
                      f"{'/'.join(d.coordination)}, graph {d.graph['kind']}")
        print(f"{path}: ok ({scenario.name}: {scenario.data.dataset}, {n} runs, backend {scenario.engine.backend}{extra})")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that ``finally`` blocks (locks, workers) run."""


def on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough; cleanup must not be interrupted
    raise Terminated()


_NOT_INSTALLED = object()


def install_signal(sig, handler):
    """Set a signal handler; returns the previous one (to restore), or _NOT_INSTALLED off the main thread."""
    try:
        previous = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        return _NOT_INSTALLED
    return signal.SIG_DFL if previous is None else previous


def restore_signal(sig, previous) -> None:
    if previous is not _NOT_INSTALLED:
        signal.signal(sig, previous)


def _stop_workers() -> None:
    """Stop what the run started: local worker processes and backend sessions (Ray, SuperLinks)."""
    from .backends import close_backends
    from .executors import shutdown_workers

    for stop in (shutdown_workers, close_backends):
        try:
            stop()
        except Exception as exc:  # noqa: BLE001 - best effort on the way out
            print(f"collective-fairness: warning: {stop.__name__} failed: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except ConfigError as exc:
        print(f"collective-fairness: error: {exc}", file=sys.stderr)
        return 2
    handler = {"run": _run, "report": _report, "validate": _validate, "paper": _paper,
               "sweep": _sweep}[args.command]
    previous = install_signal(signal.SIGTERM, on_sigterm)
    try:
        return handler(args)
    except CollectiveFairnessError as exc:
        print(f"collective-fairness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("collective-fairness: interrupted; run the same command again to resume", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130
    finally:
        interrupt = install_signal(signal.SIGINT, signal.SIG_IGN)  # the cleanup itself is not interrupted
        install_signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            _stop_workers()
        finally:
            restore_signal(signal.SIGINT, interrupt)
            restore_signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())

"""The ``stepflow-stream`` command: argument parsing, and errors turned into exit codes.

Exit codes: 0 ok, 1 a run (or a test) failed, 2 bad input. Bad input is reported as one line
naming the file, line, step or field; never as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from stepflow_stream.cli import batch, distributed, gateway, ingest, inspect, lb, run
from stepflow_stream.cli.loading import load_flow, load_run_config
from stepflow_stream.errors import StepflowError, UserInputError
from stepflow_stream.flowtests import CaseOutcome, config_for_cases, run_tests
from stepflow_stream.infra import cli as infra_cli
from stepflow_stream.journal.memory import MemoryBlobStore, MemoryJournal
from stepflow_stream.runtime.embedded import EmbeddedRuntime
from stepflow_stream.sdk import serve as serve_components

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and one line, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stepflow-stream",
                     description="Run Stepflow flows on a durable, event-sourced engine.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run_parser = commands.add_parser("run", help="run a flow on the embedded runtime")
    run.add_arguments(run_parser)
    run_parser.set_defaults(handler=run.command)

    resume_parser = commands.add_parser("resume", help="carry on the journal's unfinished runs")
    run.add_resume_arguments(resume_parser)
    resume_parser.set_defaults(handler=run.resume_command)

    test_parser = commands.add_parser("test", help="run the test cases inside flow files")
    test_parser.add_argument("paths", nargs="+", type=Path)
    test_parser.set_defaults(handler=_test_command)

    validate_parser = commands.add_parser("validate", help="check a flow and its config")
    validate_parser.add_argument("flow", type=Path)
    validate_parser.add_argument("--config", type=Path)
    validate_parser.set_defaults(handler=_validate_command)

    runs_parser = commands.add_parser("runs", help="list and inspect runs")
    runs_commands = runs_parser.add_subparsers(dest="runs_command", required=True,
                                               parser_class=_Parser)
    list_parser = runs_commands.add_parser("list", help="recent runs")
    inspect.add_list_arguments(list_parser)
    list_parser.set_defaults(handler=inspect.list_command)
    show_parser = runs_commands.add_parser("show", help="one run, step by step")
    inspect.add_show_arguments(show_parser)
    show_parser.set_defaults(handler=inspect.show_command)

    from stepflow_stream.cli import replay

    replay_parser = commands.add_parser(
        "replay", help="a run's timeline and rebuilt state, step by step, or verified"
    )
    replay.add_replay_arguments(replay_parser)
    replay_parser.set_defaults(handler=replay.replay_command)

    serve_parser = commands.add_parser(
        "serve-components", help="serve a ComponentServer over Stepflow's HTTP protocol"
    )
    serve_components.add_arguments(serve_parser)
    serve_parser.set_defaults(handler=serve_components.command)

    infra_parser = commands.add_parser(
        "infra", help="a local Kafka broker and PostgreSQL server (up, down, status)"
    )
    infra_cli.add_arguments(infra_parser)

    agents_parser = commands.add_parser(
        "agents", help="run the distributed runtime's orchestrator and worker agents"
    )
    distributed.add_agents_arguments(agents_parser)
    agents_parser.set_defaults(handler=distributed.agents_command)

    submit_parser = commands.add_parser("submit", help="submit a run to a running cluster")
    distributed.add_submit_arguments(submit_parser)
    submit_parser.set_defaults(handler=distributed.submit_command)

    gateway_parser = commands.add_parser(
        "gateway", help="serve the REST API and run event streams of a cluster"
    )
    gateway.add_arguments(gateway_parser)
    gateway_parser.set_defaults(handler=gateway.command)

    lb_parser = commands.add_parser(
        "lb", help="load-balance a component class's servers found by DNS"
    )
    lb.add_arguments(lb_parser)
    lb_parser.set_defaults(handler=lb.command)

    batch_parser = commands.add_parser("batch", help="batches: one run per line of a file")
    batch_commands = batch_parser.add_subparsers(dest="batch_command", required=True,
                                                 parser_class=_Parser)
    batch_submit_parser = batch_commands.add_parser(
        "submit", help="run a JSON Lines file, results in input order, resumable by batch id"
    )
    batch.add_submit_arguments(batch_submit_parser)
    batch_submit_parser.set_defaults(handler=batch.submit_command)

    ingest_parser = commands.add_parser(
        "ingest", help="one run per record of a Kafka topic, results to another topic"
    )
    ingest.add_arguments(ingest_parser)
    ingest_parser.set_defaults(handler=ingest.command)

    diff_parser = runs_commands.add_parser("diff", help="compare two runs step by step")
    replay.add_diff_arguments(diff_parser)
    diff_parser.set_defaults(handler=replay.diff_command)

    from stepflow_stream.cli import fork

    fork_parser = commands.add_parser(
        "fork", help="run a recorded run again from a step, reusing the steps before it"
    )
    fork.add_arguments(fork_parser)
    fork_parser.set_defaults(handler=fork.command)
    return parser


def _test_command(args: argparse.Namespace) -> int:
    def report(outcome: CaseOutcome) -> None:
        verdict = "PASS" if outcome.passed else "FAIL"
        detail = f": {outcome.problem}" if outcome.problem else ""
        print(f"{verdict} {outcome.flow} :: {outcome.case}{detail}", flush=True)

    passed, failed = asyncio.run(run_tests(args.paths, report))
    print(f"{passed} passed, {failed} failed")
    return EXIT_OK if failed == 0 and passed > 0 else EXIT_FAILED


def _validate_command(args: argparse.Namespace) -> int:
    flow = load_flow(args.flow)
    # Without --config, a flow whose tests name their own config is checked against it.
    if args.config is None and flow.test is not None and (
        flow.test.config is not None or flow.test.config_file is not None
    ):
        config = config_for_cases(flow, args.flow)
    else:
        config = load_run_config(args.config, args.flow)

    async def check() -> None:
        EmbeddedRuntime(config, MemoryJournal(), MemoryBlobStore()).check_flow(flow)

    asyncio.run(check())
    for warning in (*flow.warnings, *config.warnings):
        print(f"warning: {warning}", file=sys.stderr)
    cases = len(flow.test.cases) if flow.test else 0
    print(f"ok: {args.flow}: {len(flow.steps)} steps, {cases} test cases")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StepflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error; keep Python from complaining
        # again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())

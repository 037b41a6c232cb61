"""``python -m abtest <command>``: the A/B layer's command line.

Each command lives in its own module that defines ``add_arguments(parser)`` and ``run(args) -> int``;
this file only maps names to modules (imported lazily, so ``flush`` does not pay for ``report``'s
imports). To add a command, add one line to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "flush": ("abtest.flush", "move acknowledged events from segments / Redis streams into Parquet"),
    "report": ("abtest.report.render", "write an experiment's A/B report (Markdown + self-contained HTML)"),
    "simulate": ("abtest.sim.closed_loop", "drive simulated users at the service (or --offline) and report the truth"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m abtest",
        description="A/B testing: event log maintenance, reports, traffic simulation.",
        epilog="Run 'python -m abtest <command> --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    # only the command name is parsed here; the command's own parser reads the rest
    args, rest = parser.parse_known_args(argv[:1])
    module = importlib.import_module(COMMANDS[args.command][0])
    command_parser = argparse.ArgumentParser(
        prog=f"python -m abtest {args.command}", description=module.__doc__.strip().split("\n\n")[0]
    )
    module.add_arguments(command_parser)
    return int(module.run(command_parser.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

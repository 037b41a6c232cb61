"""Command line: generate (default), validate and summarise datasets.

    python -m data_gen --preset small --seed 7 --out data/small
    python -m data_gen generate --config configs/data_gen/example.yaml --set users.n_users=5000 --out data/x
    python -m data_gen validate data/small
    python -m data_gen summary data/small

Exit status: 0 success, 1 invalid dataset (validate) or failed run, 2 bad input (configuration,
existing output directory, missing dataset).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data_gen.card import summary_lines
from data_gen.generator_config import PRESETS, resolve_config
from feedrec_common.config import ConfigError, add_config_arguments

COMMANDS = ("generate", "validate", "summary")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_gen",
        description="Synthetic social network + ground-truth behaviour model. "
        "The command defaults to 'generate' (python -m data_gen --preset small --out data/small).",
    )
    sub = parser.add_subparsers(dest="command", metavar="{generate,validate,summary}")
    gen = sub.add_parser("generate", help="generate a dataset (default command)")
    gen.add_argument("--preset", choices=list(PRESETS), default=None, help="base preset (default: small)")
    gen.add_argument("--seed", type=int, default=None, help="random seed (overrides the config)")
    gen.add_argument("--out", type=Path, default=None, help="output directory (default: data/<name>)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(gen)
    val = sub.add_parser(
        "validate", help="check a dataset's schema, ids, references, timestamps, event order"
    )
    val.add_argument("dir", type=Path)
    summ = sub.add_parser("summary", help="print a dataset's summary table (from manifest.json)")
    summ.add_argument("dir", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["generate", *argv]
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return _generate(args)
        if args.command == "validate":
            return _validate(args.dir)
        return _summary(args.dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _generate(args: argparse.Namespace) -> int:
    from data_gen.generate import OutputExistsError, generate

    cfg = resolve_config(args.preset, args.config, args.overrides, args.seed)
    out = args.out or Path("data") / cfg.name
    try:
        result = generate(cfg, out, overwrite=args.overwrite, progress=False if args.no_progress else None)
    except OutputExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = result.manifest
    print(f"wrote {out} in {result.wall_seconds:.1f} s")
    print("\n".join(summary_lines(m)))
    print(f"dataset card: {out / 'CARD.md'}")
    if m["realism_problems"]:
        print(
            "warning: realism statistics out of range: " + "; ".join(m["realism_problems"]), file=sys.stderr
        )
    return 0


def _validate(data_dir: Path) -> int:
    from data_gen.validate import validate_dataset

    if not data_dir.is_dir():
        print(f"error: {data_dir} is not a directory", file=sys.stderr)
        return 2
    problems = validate_dataset(data_dir)
    for p in problems:
        print(f"{data_dir}/{p}", file=sys.stderr)
    if problems:
        print(f"{data_dir}: INVALID ({len(problems)} problem(s))", file=sys.stderr)
        return 1
    print(f"{data_dir}: valid")
    return 0


def _summary(data_dir: Path) -> int:
    path = data_dir / "manifest.json"
    if not path.is_file():
        print(f"error: {path} does not exist", file=sys.stderr)
        return 2
    manifest = json.loads(path.read_text())
    print(f"# {manifest['name']} (seed {manifest['seed']}, data_gen {manifest['generator_version']})")
    print("\n".join(summary_lines(manifest)))
    return 0

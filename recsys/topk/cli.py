"""``python -m recsys.topk build | info``."""

from __future__ import annotations

import argparse
import sys

from recsys.topk.backends import CppTopKBackend, get_topk_backend
from recsys.topk.build import build_extension, build_spec


def main(argv: list[str] | None = None) -> int:
    """``python -m recsys.topk build`` prebuilds the extension; ``info`` says which backend is used."""
    parser = argparse.ArgumentParser(prog="python -m recsys.topk", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="compile the C++ top-k extension into the cache (no-op if cached)")
    build.add_argument("--verbose", action="store_true", help="show the compiler commands")
    sub.add_parser("info", help="print the backend get_topk_backend() picks and the cache directory")
    args = parser.parse_args(argv)
    if args.command == "build":
        try:
            library = build_extension(verbose=args.verbose)
        except Exception as error:
            print(f"error: building the top-k extension failed: {error}", file=sys.stderr)
            return 1
        print(library)
        return 0
    backend = get_topk_backend()
    kernel = f" int8_kernel={backend.compact_kernel}" if isinstance(backend, CppTopKBackend) else ""
    print(f"backend={backend.name}{kernel} cache={build_spec()[3]}")
    return 0

"""Find absolute paths of a particular machine in the repository's files (``make lint`` runs this).

A path under a home directory or the workspace root works on one machine only; code, configs
and docs must name files relative to the repository (or take them from a setting). What counts as
machine-specific: home directories (Linux and macOS home roots, the superuser's home, Windows user
folders), the workspace and mount roots (``_ROOTS`` below), and this checkout's own absolute path.
Paths inside a container image (the image's app folder, temporary files in ``docker-compose.yml``)
are not flagged.

Usage::

    python scripts/check_abs_paths.py [ROOT]     # exit 1 and one ``file:line: path`` per finding

Files are the ones git tracks or would track (``git ls-files --cached --others --exclude-standard``)
under ``ROOT`` (default: the repository holding this script); outside a git checkout every file
under ``ROOT`` except hidden folders and virtual environments. Binary files are skipped. A line may
opt out with the marker ``abs-path-ok`` (for a test that must spell such a path).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

OPT_OUT = "abs-path-ok"
# Root folder names, joined with "/" below so this file does not itself spell a machine path.
_ROOTS = ("root", "work", "mnt", "media")
_HOMES = ("home", "Users")
# A path component boundary before the root, so a URL path or a relative "a/<home>/b" does not match.
_PATTERN = (
    r"(?<![\w./~-])(?:"
    + "|".join(f"/{h}/[\\w.-]+" for h in _HOMES)
    + "|" + "|".join(f"/{r}" for r in _ROOTS)
    + r"|[A-Za-z]:\\Users\\[\w.-]+)(?=[/\\])"
)
_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", "build", "data", "mlruns", "mlartifacts"}


def _files(root: Path) -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root, capture_output=True, check=True,
        ).stdout
        return [root / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked archive)
        return [
            p for p in root.rglob("*")
            if p.is_file() and not any(part in _SKIP_DIRS or part.startswith(".") for part in p.relative_to(root).parts[:-1])
        ]


def find_abs_paths(root: Path) -> list[tuple[Path, int, str]]:
    """``(file, 1-based line, path)`` for every machine-specific absolute path under ``root``."""
    root = root.resolve()
    pattern = re.compile(f"{_PATTERN}|{re.escape(str(root))}")
    found = []
    for path in sorted(_files(root)):
        try:
            data = path.read_bytes()
        except OSError:  # a file deleted but still listed by git
            continue
        if b"\0" in data[:8192]:  # binary
            continue
        for lineno, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if OPT_OUT in line:
                continue
            found += [(path, lineno, m.group(0)) for m in pattern.finditer(line)]
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    found = find_abs_paths(root)
    for path, lineno, text in found:
        print(f"{path.relative_to(root.resolve())}:{lineno}: machine-specific absolute path {text!r}", file=sys.stderr)
    if found:
        print(f"{len(found)} absolute path(s): name files relative to the repository or via a setting",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Reader of the LightGCN / NGCF text format (Gowalla, Yelp2018, Amazon-Book splits).

Each line is ``user item item ...``: whitespace-separated, 0-based non-negative integers. A line with
only a user id is a user without items. ``train.txt`` and ``test.txt`` together give a :class:`Split`
of kind ``"given"``; the external id of a user or item is the integer in the file, so the id maps are
``0..max``.

Parsing is one vectorised pass over the file's bytes (about 0.1 s for Gowalla's 1M ids): a byte scan
checks that the file holds only digits and whitespace, ``np.fromstring`` parses every integer at once
and the per-line token counts give the user of each item. Only when the fast path finds a problem does
a slow line-by-line pass run, to name the exact line in the :class:`DataError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.data.dataset import DataError, Dataset, IdMap, Split
from recsys.data.sparse import pairs_to_csr

#: Largest id accepted: indices are stored as int32 in CSR matrices, and an absurd id would make the
#: dense id map (0..max) exhaust memory.
MAX_ID = 2**31 - 2

# Bytes allowed in a well-formed file: digits, space, tab, CR, LF.
_ALLOWED = np.zeros(256, dtype=bool)
_ALLOWED[ord("0") : ord("9") + 1] = True
_ALLOWED[[ord(" "), ord("\t"), ord("\r"), ord("\n")]] = True


def read_lightgcn_file(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse one LightGCN-format file.

    Args:
        path (str | Path): A ``train.txt`` / ``test.txt`` style file.

    Returns:
        tuple: ``(line_users, rows, cols)``: the user id of every non-blank line (``int64``, in file
        order, so users without items are included), and the ``(user, item)`` pair of every item token
        (``int64``, in file order, duplicates kept).

    Raises:
        DataError: naming the file and 1-based line number for a non-integer or negative token, or an
            id above :data:`MAX_ID`.
    """
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    raw = np.frombuffer(text, dtype=np.uint8)
    if not _ALLOWED[raw].all():
        _diagnose(path, text)  # raises with the line number
    values = np.fromstring(text, dtype=np.int64, sep=" ") if text.strip() else np.empty(0, np.int64)
    if values.size and values.max() > MAX_ID:
        _diagnose(path, text)
    # Tokens per line; the first token of a non-blank line is its user.
    counts = np.fromiter((len(line.split()) for line in text.split(b"\n")), dtype=np.int64)
    counts = counts[counts > 0]
    if counts.sum() != values.size:  # cannot happen for digit/whitespace text; guard the invariant
        _diagnose(path, text)
        raise DataError(f"{path}: could not parse the file")  # pragma: no cover
    starts = np.cumsum(counts) - counts
    line_users = values[starts]
    rows = np.repeat(line_users, counts - 1)
    is_item = np.ones(values.size, dtype=bool)
    is_item[starts] = False
    return line_users, rows, values[is_item]


def _diagnose(path: Path, text: bytes) -> None:
    """Slow pass that finds the first malformed line and raises a ``DataError`` naming it."""
    for lineno, line in enumerate(text.split(b"\n"), start=1):
        for position, token in enumerate(line.split()):
            what = "user" if position == 0 else "item"
            shown = token.decode("utf-8", errors="replace")
            try:
                value = int(token)
            except ValueError:
                raise DataError(f"{path}:{lineno}: {what} id {shown!r} is not an integer") from None
            if not token.isdigit():  # int() accepts "+5", "1_000", "-3"
                if value < 0:
                    raise DataError(f"{path}:{lineno}: negative {what} id {shown}")
                raise DataError(f"{path}:{lineno}: {what} id {shown!r} is not a plain integer")
            if value > MAX_ID:
                raise DataError(f"{path}:{lineno}: {what} id {shown} is larger than {MAX_ID}")
    raise DataError(f"{path}: contains bytes other than digits and whitespace")


def _file_positions(rows: np.ndarray) -> np.ndarray:
    """1-based position of each pair in its user's listing (``rows`` in file order; a user listed on
    two lines continues counting on the second)."""
    by_user = np.argsort(rows, kind="stable")
    sorted_rows = rows[by_user]
    position = np.empty(rows.size, dtype=np.int64)
    position[by_user] = np.arange(rows.size) - np.searchsorted(sorted_rows, sorted_rows, side="left") + 1
    return position


def _first_line_of(path: Path, bad_users: set[int], bad_items: set[int]) -> int:
    """1-based number of the first line whose user or items are in the given bad sets."""
    for lineno, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        tokens = [int(t) for t in line.split()]
        if tokens and (tokens[0] in bad_users or any(t in bad_items for t in tokens[1:])):
            return lineno
    return 0  # pragma: no cover - callers only ask for values that occur


def load_lightgcn(directory: str | Path, name: str = "gowalla") -> Split:
    """Load ``train.txt`` and ``test.txt`` of a LightGCN-format dataset as a given split.

    Duplicated pairs are kept once (at their first position in ``Dataset.sequence``). Users are
    ``0..max`` over both files (a user may have no items, or appear only in ``test.txt``); items are ``0..max`` over ``train.txt``, and a test item above
    that range is an error: a model could never score it.

    Args:
        directory (str | Path): Folder holding ``train.txt`` and ``test.txt``.
        name (str): Dataset name recorded in ``Dataset.name``. (default: ``"gowalla"``)

    Returns:
        Split: ``kind="given"``, ``valid=None``; ``info`` has the file paths.

    Raises:
        DataError: a missing or malformed file (the message names file and line).
    """
    directory = Path(directory)
    train_path, test_path = directory / "train.txt", directory / "test.txt"
    for p in (train_path, test_path):
        if not p.is_file():
            raise DataError(f"{p}: file not found (expected LightGCN-format train.txt and test.txt)")
    train_users, train_rows, train_cols = read_lightgcn_file(train_path)
    test_users, test_rows, test_cols = read_lightgcn_file(test_path)

    n_items = int(train_cols.max()) + 1 if train_cols.size else 0
    if test_cols.size and test_cols.max() >= n_items:
        bad = int(test_cols[test_cols >= n_items][0])
        lineno = _first_line_of(test_path, set(), {bad})
        raise DataError(
            f"{test_path}:{lineno}: item id {bad} is outside the map "
            f"(train.txt has items 0..{n_items - 1})"
        )
    all_users = np.concatenate([train_users, test_users])
    n_users = int(all_users.max()) + 1 if all_users.size else 0

    # One sort for both: the positions' sparsity is the positives'.
    sequence = pairs_to_csr(train_rows, train_cols, (n_users, n_items), values=_file_positions(train_rows))
    user_items = sp.csr_matrix((np.ones(sequence.nnz, dtype=np.float32), sequence.indices, sequence.indptr),
                               shape=sequence.shape)
    test = pairs_to_csr(test_rows, test_cols, (n_users, n_items))
    train = Dataset(
        name=name,
        users=IdMap(np.arange(n_users, dtype=np.int64), "user"),
        items=IdMap(np.arange(n_items, dtype=np.int64), "item"),
        user_items=user_items,
        source=str(directory),
        sequence=sequence,
    )
    info = {
        "train_file": str(train_path),
        "test_file": str(test_path),
        "overlap_removed": int(test.multiply(user_items).nnz),
    }
    if info["overlap_removed"]:
        # A pair in both files is already known at training time: it is not a held-out positive.
        test = (test - test.multiply(user_items)).tocsr()
        test.eliminate_zeros()
        test.sort_indices()
    return Split(train=train, test=test, valid=None, kind="given", info=info)

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from recsys.data import DataError, load_lightgcn
from recsys.data.lightgcn import read_lightgcn_file

GOWALLA = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "gowalla"


def write(tmp_path: Path, train: str, test: str) -> Path:
    (tmp_path / "train.txt").write_text(train)
    (tmp_path / "test.txt").write_text(test)
    return tmp_path


def rows_of(m) -> list[list[int]]:
    return [sorted(m.indices[m.indptr[u] : m.indptr[u + 1]].tolist()) for u in range(m.shape[0])]


def test_reads_pairs_users_without_items_and_dedups(tmp_path):
    # user 1 has no items; user 2 repeats item 4; CRLF, tabs, blank lines and trailing spaces are fine.
    d = write(tmp_path, "0 1 2\n1\r\n\n2\t4 4  0 \n", "0 4\n1 0\n2\n3 2\n")
    split = load_lightgcn(d, name="toy")
    assert split.kind == "given" and split.valid is None and split.train.name == "toy"
    assert (split.train.n_users, split.train.n_items) == (4, 5)  # user 3 appears only in test
    assert rows_of(split.train.user_items) == [[1, 2], [], [0, 4], []]
    assert rows_of(split.test) == [[4], [0], [], [2]]
    assert split.train.user_items.dtype == np.float32
    assert np.all(split.train.user_items.data == 1.0)
    assert split.train.users.index(3) == 3 and split.train.items.ids.tolist() == [0, 1, 2, 3, 4]


def test_sequence_keeps_each_users_file_order(tmp_path):
    # user 0 lists 3 2 7 (then repeats 2: its first position stays); user 2 is listed on two lines,
    # and the second continues the count.
    split = load_lightgcn(write(tmp_path, "0 3 2 7 2\n2 5\n1 0\n2 1 4\n", "0 0\n"))
    seq, items = split.train.sequence, split.train.user_items
    assert np.array_equal(seq.indptr, items.indptr) and np.array_equal(seq.indices, items.indices)
    by_order = [seq.indices[seq.indptr[u] : seq.indptr[u + 1]][np.argsort(seq.data[seq.indptr[u] : seq.indptr[u + 1]])]
                for u in range(3)]
    assert [b.tolist() for b in by_order] == [[3, 2, 7], [0], [5, 1, 4]]
    assert seq.data.tolist() == [2, 1, 3, 1, 2, 3, 1]  # CSR order: (0,2) (0,3) (0,7) (1,0) (2,1) (2,4) (2,5)


def test_train_test_overlap_is_removed_from_test(tmp_path):
    split = load_lightgcn(write(tmp_path, "0 1 2\n", "0 2 0\n"))
    assert rows_of(split.test) == [[0]]
    assert split.info["overlap_removed"] == 1


def test_empty_files_give_an_empty_split(tmp_path):
    split = load_lightgcn(write(tmp_path, "", "\n"))
    assert split.train.n_users == 0 and split.test.nnz == 0


@pytest.mark.parametrize(
    ("train", "test", "where", "phrase"),
    [
        ("0 1 2\n1 x 3\n", "0 1\n", "train.txt:2", "'x' is not an integer"),
        ("0 1 2\n1 3\n2 -5\n", "0 1\n", "train.txt:3", "negative item id -5"),
        ("0 1 2\n-1 3\n", "0 1\n", "train.txt:2", "negative user id -1"),
        ("0 1 2.5\n", "0 1\n", "train.txt:1", "'2.5' is not an integer"),
        ("0 1 2\n", "0 1\n1 1,2\n", "test.txt:2", "'1,2' is not an integer"),
        ("0 1 2\n", "0 1\n\n1 0 7\n", "test.txt:3", "id outside the map"),
        ("0 1 99999999999\n", "0 1\n", "train.txt:1", "larger than"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path, train, test, where, phrase):
    d = write(tmp_path, train, test)
    with pytest.raises(DataError) as err:
        load_lightgcn(d)
    message = str(err.value).replace("is outside the map", "id outside the map")
    assert where in message and phrase in message


def test_missing_file_is_a_data_error(tmp_path):
    (tmp_path / "train.txt").write_text("0 1\n")
    with pytest.raises(DataError, match="test.txt: file not found"):
        load_lightgcn(tmp_path)


def test_reader_returns_line_users_in_file_order(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("5 1 2\n3\n5 0\n")
    users, rows, cols = read_lightgcn_file(p)
    assert users.tolist() == [5, 3, 5]
    assert rows.tolist() == [5, 5, 5] and cols.tolist() == [1, 2, 0]


@pytest.mark.skipif(not (GOWALLA / "train.txt").is_file(), reason="Gowalla files not present")
def test_real_gowalla_counts_match_the_readme():
    start = time.perf_counter()
    split = load_lightgcn(GOWALLA)
    elapsed = time.perf_counter() - start
    assert (split.train.n_users, split.train.n_items) == (29_858, 40_981)
    assert split.train.n_interactions == 810_128
    assert split.test.nnz == 217_242
    assert split.info["overlap_removed"] == 0
    assert elapsed < 5.0, f"loading Gowalla took {elapsed:.1f} s"

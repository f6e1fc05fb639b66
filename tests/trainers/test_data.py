"""Reading the export formats: file types, row kinds, bad rows, regrouping of pairwise rows."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainers.data import (
    group_preferences, iter_text_documents, parse_comparison, parse_preference, parse_prompt, parse_sft,
    prompts_in_several_splits, read_file, read_pretrain, split_train_valid,
)
from trainers.errors import DataError

from conftest import pairwise_from_rankings, ranking_rows, write_jsonl

SFT = [
    {"prompt": "Hi", "completion": "Hello", "split": "train"},
    {"messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hey"}], "split": "valid"},
]


def test_reads_jsonl_gzip_and_parquet_alike(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", SFT)
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in SFT)
    pq.write_table(pa.Table.from_pylist([SFT[0], {**SFT[0], "completion": "Yo"}]), tmp_path / "a.parquet")
    a, _ = read_file(tmp_path / "a.jsonl", parse_sft)
    b, _ = read_file(tmp_path / "a.jsonl.gz", parse_sft)
    c, _ = read_file(tmp_path / "a.parquet", parse_sft)
    assert a == b
    assert a[0].messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert a[1].messages[0]["role"] == "system" and a[1].split == "valid"
    assert [x.messages[-1]["content"] for x in c] == ["Hello", "Yo"]


def test_malformed_row_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [SFT[0], {"prompt": "x"}, SFT[0]])
    with pytest.raises(DataError) as e:
        read_file(path, parse_sft)
    assert "bad.jsonl:2" in str(e.value) and "'completion'" in str(e.value)


def test_invalid_json_line_is_reported(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(SFT[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"broken.jsonl:2: invalid JSON"):
        read_file(path, parse_sft)


def test_skip_bad_rows_counts_and_reports(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [SFT[0], {"prompt": 3, "completion": "x"}, SFT[1]])
    rows, report = read_file(path, parse_sft, skip_bad_rows=True)
    assert len(rows) == 2 and report.skipped == 1
    assert "bad.jsonl:2" in report.summary()


def test_unknown_suffix_and_missing_file_are_clear_errors(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown file type"):
        read_file(tmp_path / "x.csv", parse_sft)
    with pytest.raises(DataError, match="file not found"):
        read_file(tmp_path / "nope.jsonl", parse_sft)


def test_comparison_buckets_give_pairs_and_ties_give_none():
    row = {"prompt": "p", "completions": [{"id": i, "text": t} for i, t in enumerate("abcd")],
           "ranked": [[0], [1, 2], [3]]}
    g = parse_comparison(row)
    assert sorted(g.pairs) == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]
    with pytest.raises(ValueError, match="unknown completion id"):
        parse_comparison({**row, "ranked": [[0], [9]]})
    with pytest.raises(ValueError, match="no pair"):
        parse_comparison({**row, "ranked": [[0, 1, 2, 3]]})


def test_pairwise_rows_regroup_into_the_same_kwise_groups():
    native = ranking_rows(5, k=4, seed=3)
    a = group_preferences([parse_preference(r) for r in native])
    b = group_preferences([parse_preference(r) for r in pairwise_from_rankings(native)])
    assert len(a) == len(b) == 5
    for ga, gb in zip(a, b):
        assert len(gb.completions) == 4 and len(gb.pairs) == 6  # C(4,2)
        pa_ = {(ga.completions[w], ga.completions[l]) for w, l in ga.pairs}
        pb_ = {(gb.completions[w], gb.completions[l]) for w, l in gb.pairs}
        assert pa_ == pb_


def test_pairwise_rows_without_ranking_id_group_by_prompt():
    rows = [{"prompt": "Q", "chosen": "a", "rejected": "b"}, {"prompt": "Q", "chosen": "b", "rejected": "c"},
            {"prompt": "Q", "chosen": "a", "rejected": "c"}, {"prompt": "R", "chosen": "x", "rejected": "y"}]
    g, h = group_preferences([parse_preference(r) for r in rows])
    assert g.completions == ["a", "b", "c"] and sorted(g.pairs) == [(0, 1), (0, 2), (1, 2)]
    assert h.completions == ["x", "y"] and h.pairs == [(0, 1)]


def test_pairwise_rows_stay_in_the_split_they_are_marked_with():
    # One prompt, rows in both splits, no ranking_id: before, the group took its first row's split
    # and the test rows were trained on without a word.
    rows = [{"prompt": "Q", "chosen": "a", "rejected": "b", "split": "train"},
            {"prompt": "Q", "chosen": "c", "rejected": "d", "split": "test"},
            {"prompt": "Q", "chosen": "e", "rejected": "f", "split": "test"},
            {"prompt": "R", "chosen": "x", "rejected": "y", "split": "test"}]
    groups = group_preferences([parse_preference(r) for r in rows])
    train, valid = split_train_valid(groups, 0.0, 0)
    assert [g.completions for g in train] == [["a", "b"]]
    assert sorted(c for g in valid for c in g.completions) == ["c", "d", "e", "f", "x", "y"]
    assert prompts_in_several_splits(groups) == 1  # Q: reported by the RM trainer as a warning


def test_message_style_pairwise_rows():
    row = {"prompt": [{"role": "user", "content": "Q"}],
           "chosen": [{"role": "assistant", "content": "good"}],
           "rejected": [{"role": "assistant", "content": "bad"}]}
    (g,) = group_preferences([parse_preference(row)])
    assert g.prompt == [{"role": "user", "content": "Q"}]
    assert [(g.completions[w], g.completions[l]) for w, l in g.pairs] == [("good", "bad")]


def test_prompt_rows_and_splits():
    p = parse_prompt({"prompt": "Tell me", "prompt_id": 4, "split": "valid"})
    assert p.messages == [{"role": "user", "content": "Tell me"}] and p.prompt_id == 4
    with pytest.raises(ValueError, match="prompt_id"):
        parse_prompt({"prompt": "x", "prompt_id": "4"})
    train, valid = split_train_valid([p, parse_prompt({"prompt": "y"})], 0.5, 0)
    assert valid == [p] and len(train) == 1


CORPUS = "\ufeffFirst document,\n  its second line kept as is.  \n\n\n \t \nSecond one.\r\nStill second.\r\n\r\nThird\n\n"
DOCS = ["First document,\n  its second line kept as is.  ", "Second one.\nStill second.", "Third"]


def test_text_corpus_splits_into_documents_at_blank_lines(tmp_path):
    (tmp_path / "c.txt").write_bytes(CORPUS.encode("utf-8"))
    (tmp_path / "UPPER.TXT").write_bytes(CORPUS.encode("utf-8"))
    with gzip.open(tmp_path / "c.txt.gz", "wb") as fh:
        fh.write(CORPUS.encode("utf-8"))
    for name in ("c.txt", "c.txt.gz", "UPPER.TXT"):
        docs, report = read_pretrain(tmp_path / name)
        assert docs == DOCS, name
        assert report.rows == 3
    assert [line for line, _ in iter_text_documents(tmp_path / "c.txt")] == [1, 6, 9]
    (tmp_path / "one.txt").write_text("no blank line\nat all", encoding="utf-8")
    assert read_pretrain(tmp_path / "one.txt")[0] == ["no blank line\nat all"]


def test_pretrain_rows_still_read_text_and_sft_rows(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "plain"}, SFT[0]])
    assert read_pretrain(path)[0] == ["plain", "Hi\n\nHello"]
    with gzip.open(tmp_path / "p.jsonl.gz", "wt", encoding="utf-8") as fh:  # .gz that is not .txt.gz: JSONL
        fh.write(json.dumps({"text": "zipped"}) + "\n")
    assert read_pretrain(tmp_path / "p.jsonl.gz")[0] == ["zipped"]


@pytest.mark.parametrize("name, data, message", [
    ("empty.txt", b"", "empty.txt: empty corpus"),
    ("blank.txt", b"\n  \n\t\n", "blank.txt: empty corpus"),
    ("latin1.txt", "ok\n\ncaf\u00e9\n".encode("latin-1"), "latin1.txt:3: not UTF-8 text (byte 4 of the line"),
    ("latin1.txt.gz", gzip.compress("caf\u00e9".encode("latin-1")), "latin1.txt.gz:1: not UTF-8 text"),
    ("notgzip.txt.gz", b"plain text", "notgzip.txt.gz: cannot read file"),
    ("corpus.md", b"# text", "corpus.md: unknown file type for pretraining text (expected .txt, .txt.gz"),
])
def test_bad_text_corpus_is_a_clear_error(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError) as e:
        read_pretrain(tmp_path / name, skip_bad_rows=True)
    assert message in str(e.value) and str(tmp_path) in str(e.value)

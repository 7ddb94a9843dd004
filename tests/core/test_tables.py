"""The one table reader: CSV/TSV dialects (standard quoting with multi-line fields vs stray quotes),
the note saying which was used, and the fallback when the sniffed dialect fails further down."""

from __future__ import annotations

import polars as pl
import pytest

from deepapps.core.data import tables
from deepapps.core.data.tables import read_table, scan_table, sniff_dialect
from deepapps.core.errors import DataError
from tests.helpers import shared_path

REVIEWS_TSV = (
    'id\tsentence\tlabel\n'
    '1\t"Great kettle.\nBoils fast, ""quiet"" too."\tpositive\n'
    '2\tplain line, no quotes\tnegative\n'
    '3\t"a tab\tinside the quotes"\tpositive\n'
    '4\t"three\nline\nreview"\tnegative\n'
)


def test_tsv_with_quoted_multiline_fields_is_read_with_standard_quoting(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text(REVIEWS_TSV)
    notes = []
    df = read_table(path, notes=notes)
    assert df.height == 4 and df.columns == ["id", "sentence", "label"]
    assert df["sentence"].to_list() == ['Great kettle.\nBoils fast, "quiet" too.', "plain line, no quotes",
                                        "a tab\tinside the quotes", "three\nline\nreview"]
    assert df["label"].to_list() == ["positive", "negative", "positive", "negative"]
    assert notes == ["reviews.tsv: read as TSV with standard quoting (RFC 4180): quoted fields (2 spanning several lines)"]


def test_csv_with_quoted_commas_and_line_breaks(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"hello, world",1\n"line one\r\nline two",0\nplain,1\n')
    notes = []
    df = read_table(path, notes=notes)
    assert df["text"].to_list() == ["hello, world", "line one\r\nline two", "plain"]
    assert df["label"].to_list() == [1, 0, 1]
    assert "read as CSV with standard quoting" in notes[0]


def test_sst2_style_stray_quotes_are_text(tmp_path):
    path = tmp_path / "sst.tsv"
    path.write_text('sentence\tlabel\n"a quote opens here\t1\nbad , bad film\t0\nit \'s a "so-called" hit\t1\n'
                    'ends with a quote"\t0\n')
    notes = []
    df = read_table(path, notes=notes)
    assert df["sentence"].to_list() == ['"a quote opens here', "bad , bad film", 'it \'s a "so-called" hit',
                                        'ends with a quote"']
    assert df["label"].to_list() == [1, 0, 1, 0]
    assert notes[0].startswith("sst.tsv: read as TSV without quoting (quotes are text): stray quote characters")


def test_a_quote_inside_an_unquoted_field_is_read_as_written(tmp_path):
    path = tmp_path / "mid.tsv"
    path.write_text('text\tlabel\nab"c d\t1\nok\t0\n')
    assert read_table(path)["text"].to_list() == ['ab"c d', "ok"]
    assert not sniff_dialect(path).quoted


def test_without_quotes_csv_is_quoted_and_tsv_is_not(tmp_path):
    (tmp_path / "a.csv").write_text("a,b\n1,2\n")
    (tmp_path / "a.tsv").write_text("a\tb\n1\t2\n")
    assert sniff_dialect(tmp_path / "a.csv").quoted and not sniff_dialect(tmp_path / "a.tsv").quoted
    notes = []
    scan_table(tmp_path / "a.tsv", notes=notes)  # the lazy scan notes its dialect too
    assert notes == ["a.tsv: read as TSV without quoting (quotes are text): no quote characters"]


def test_read_table_falls_back_when_quotes_come_after_the_sniffed_part(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "SNIFF_BYTES", 64)
    lines = [f"row number {i} of plain text\t{i % 2}" for i in range(20)]
    lines.insert(15, '"an opening quote never closed\t1')
    path = tmp_path / "late.tsv"
    path.write_text("text\tlabel\n" + "\n".join(lines) + "\n")
    assert not sniff_dialect(path).quoted  # no quote in the first 64 bytes: TSV default
    (tmp_path / "late.csv").write_text("text,label\n" + "\n".join(line.replace("\t", ",") for line in lines) + "\n")
    notes = []
    df = read_table(tmp_path / "late.csv", notes=notes)  # quoted by default, fails: read unquoted
    assert df.height == 21 and df["text"][15] == '"an opening quote never closed'
    assert "without quoting" in notes[0] and "reading failed" in notes[0]


def test_unreadable_in_both_dialects_is_one_data_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('text,label\n"unterminated,1\nok,0,3\n')
    with pytest.raises(DataError, match="bad.csv: cannot read"):
        read_table(path)


@pytest.mark.shared
def test_shared_sst2_reads_as_before():
    path = shared_path("data", "sst2", "train.tsv")
    notes = []
    df = read_table(path, notes=notes)
    assert df.height == 67_349
    before = pl.read_csv(path, separator="\t", quote_char=None)  # how the reader read it until now
    assert df["sentence"].to_list() == before["sentence"].to_list()
    assert "without quoting" in notes[0]

"""Labelled / unlabelled data loading: column detection, tasks, holdout, and every bad-data message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qtinker.core.errors import QTinkerError
from qtinker.data.loaders import (LabelledData, apply_label_config, batches, check_eval_labels, label_maps, load_eval, load_labelled,
                                  load_unlabelled, sample_dataset_path, sample_eval_path, sample_unlabelled_path,
                                  split_holdout)


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(QTinkerError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message  # one line for the CLI and the UI
    return message


# ---------------------------------------------------------------- reading and detection
def test_csv_classification_with_string_labels(tmp_path):
    path = write(tmp_path, "train.csv", 'text,label\n"Good, really good",pos\nbad,neg\nfine,neutral\nawful,neg\n')
    data = load_labelled(path)
    assert data.task == "classification"
    assert data.label_names == ["neg", "neutral", "pos"]  # sorted, so train and eval files agree
    assert data.labels == [2, 0, 1, 0]
    assert data.texts[0] == "Good, really good"
    assert data.text_pairs is None
    assert data.columns == {"text": "text", "label": "label"}
    assert data.lines == [2, 3, 4, 5]
    assert len(data) == 4 and data.num_labels == 3
    assert data.preview(2) == [{"text": "Good, really good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    assert data.class_counts() == {"neg": 2, "neutral": 1, "pos": 1}
    assert data.summary() == "4 examples, 3 classes (neg 2, neutral 1, pos 1); columns text=text, label=label"


def test_integer_labels_sort_numerically(tmp_path):
    rows = "".join(f"t{i},{y}\n" for i, y in enumerate([10, 2, 1, 2.0]))
    data = load_labelled(write(tmp_path, "d.csv", "sentence,target\n" + rows))
    assert data.label_names == ["1", "2", "10"]
    assert data.labels == [2, 1, 0, 1]


@pytest.mark.parametrize("text_col", ["text", "Sentence", "review", "content"])
@pytest.mark.parametrize("label_col", ["label", "labels", "target", "class", "score"])
def test_common_column_names_are_detected(tmp_path, text_col, label_col):
    path = write(tmp_path, "d.csv", f"id,{text_col},{label_col}\n1,hello,a\n2,bye,b\n")
    data = load_labelled(path)
    assert data.columns == {"text": text_col, "label": label_col}
    assert data.texts == ["hello", "bye"]


@pytest.mark.parametrize("pair", [("sentence1", "sentence2"), ("premise", "hypothesis"), ("question", "sentence")])
def test_text_pairs_are_detected(tmp_path, pair):
    path = write(tmp_path, "d.csv", f"{pair[0]},{pair[1]},label\na b,c d,yes\ne f,g h,no\n")
    data = load_labelled(path)
    assert data.columns == {"text": pair[0], "text_pair": pair[1], "label": "label"}
    assert data.texts == ["a b", "e f"] and data.text_pairs == ["c d", "g h"]
    assert data.preview(1) == [{"text": "a b", "text_pair": "c d", "label": "yes"}]


def test_columns_can_be_overridden(tmp_path):
    path = write(tmp_path, "d.csv", "a,b,c,d\nx,y,1,p\nz,w,0,q\n")
    data = load_labelled(path, text_column="b", text_pair_column="a", label_column="d")
    assert data.texts == ["y", "w"] and data.text_pairs == ["x", "z"] and data.label_names == ["p", "q"]


def test_two_columns_with_one_recognised(tmp_path):
    data = load_labelled(write(tmp_path, "d.csv", "tweet,label\nhi,a\nho,b\n"))
    assert data.columns == {"text": "tweet", "label": "label"}


def test_tsv_keeps_quotes_as_text(tmp_path):
    path = write(tmp_path, "d.tsv", 'sentence\tlabel\nit \'s a "great" film , 10/10\t1\nmeh\t0\n')
    data = load_labelled(path)
    assert data.texts[0] == 'it \'s a "great" film , 10/10'
    assert data.label_names == ["0", "1"] and data.labels == [1, 0]


def test_semicolon_csv_from_a_spreadsheet(tmp_path):
    data = load_labelled(write(tmp_path, "excel.csv", 'text;label\n"one, two";a\nthree;b\n'))
    assert data.texts == ["one, two", "three"] and data.label_names == ["a", "b"]


def test_jsonl_with_numbers_and_blank_lines(tmp_path):
    lines = [{"premise": "a", "hypothesis": "b", "label": 0}, {}, {"premise": "c", "hypothesis": "d", "label": 2}]
    text = "\n".join("" if not x else json.dumps(x) for x in lines) + "\n"
    data = load_labelled(write(tmp_path, "d.jsonl", text))
    assert data.text_pairs == ["b", "d"] and data.label_names == ["0", "2"] and data.lines == [1, 3]


def test_json_list_file(tmp_path):
    data = load_labelled(write(tmp_path, "d.json", json.dumps([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])))
    assert data.label_names == ["x", "y"]


def test_utf8_bom_and_non_ascii_text(tmp_path):
    data = load_labelled(write(tmp_path, "d.csv", "\ufefftext,label\nnaïve café,a\n東京,b\n".encode("utf-8")))
    assert data.texts == ["naïve café", "東京"] and data.columns["text"] == "text"


# ---------------------------------------------------------------- regression
def test_regression_is_detected_from_fractional_numbers(tmp_path):
    data = load_labelled(write(tmp_path, "sts.csv", "sentence1,sentence2,score\na,b,3.8\nc,d,0\ne,f,5\n"))
    assert data.task == "regression"
    assert data.labels == [3.8, 0.0, 5.0] and data.label_names == [] and data.num_labels == 1
    assert label_maps(data) == ({0: "score"}, {"score": 0})
    assert data.summary() == ("3 examples, regression (0 to 5); "
                              "columns text=sentence1, text_pair=sentence2, label=score")


def test_regression_can_be_forced_and_classification_too(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\na,1\nb,2\nc,3\n")
    assert load_labelled(path, task="regression").labels == [1.0, 2.0, 3.0]
    fractional = write(tmp_path, "f.csv", "text,label\na,0.5\nb,1.5\n")
    assert load_labelled(fractional, task="classification").label_names == ["0.5", "1.5"]


def test_regression_label_that_is_not_a_number(tmp_path):
    path = write(tmp_path, "sts.csv", "text,score\na,1.5\nb,2.5\nc,high\n")
    message = error_of(load_labelled, path, task="regression")
    assert "sts.csv" in message and "line 4" in message and "'high'" in message and "not a number" in message
    assert "--task classification" in message


# ---------------------------------------------------------------- holdout and eval labels
def test_split_holdout_is_stratified_and_seeded(tmp_path):
    rows = "".join(f"t{i},{'abc'[i % 3] if i < 60 else 'a'}\n" for i in range(90))  # a: 50, b: 20, c: 20
    data = load_labelled(write(tmp_path, "d.csv", "text,label\n" + rows))
    train, held = split_holdout(data, 0.2, seed=1)
    assert held.class_counts() == {"a": 10, "b": 4, "c": 4}
    assert train.class_counts() == {"a": 40, "b": 16, "c": 16}
    assert set(train.texts).isdisjoint(held.texts) and len(train) + len(held) == 90
    assert held.texts == split_holdout(data, 0.2, seed=1)[1].texts
    assert held.texts != split_holdout(data, 0.2, seed=2)[1].texts
    assert held.label_names == data.label_names


def test_split_holdout_bad_fraction_and_too_small(tmp_path):
    data = load_labelled(write(tmp_path, "d.csv", "text,label\na,x\nb,y\n"))
    assert "between 0 and 1" in error_of(split_holdout, data, 1.5)
    assert "--eval-data" in error_of(split_holdout, data, 0.1)


def test_eval_labels_are_reindexed_onto_training_labels(tmp_path):
    train = load_labelled(write(tmp_path, "train.csv", "text,label\na,cat\nb,dog\nc,eel\n"))
    ev = load_labelled(write(tmp_path, "test.csv", "text,label\nd,eel\ne,cat\n"))
    assert ev.labels == [1, 0]
    check_eval_labels(train, ev)
    assert ev.label_names == ["cat", "dog", "eel"] and ev.labels == [2, 0]


def test_eval_labels_unseen_in_training(tmp_path):
    train = load_labelled(write(tmp_path, "train.csv", "text,label\na,cat\nb,dog\n"))
    ev = load_labelled(write(tmp_path, "test.csv", "text,label\nd,dog\ne,Cat\n"))
    message = error_of(check_eval_labels, train, ev)
    assert "test.csv" in message and "line 3" in message and "'Cat'" in message and "train.csv" in message
    assert "cat, dog" in message and "fix the spelling" in message


# ---------------------------------------------------------------- bad data: file, row and fix in one line
@pytest.mark.parametrize("name, content, words", [
    ("empty.csv", "", ["empty.csv", "empty", "header row"]),
    ("blank.csv", "\n  \n", ["blank.csv", "empty"]),
    ("header.csv", "text,label\n", ["header.csv", "only a header", "add at least one example"]),
    ("nocols.csv", "foo,bar,baz\n1,2,3\n", ["nocols.csv", "columns found: foo, bar, baz", "--text-column"]),
    ("nolabel.csv", "id,text,extra\n1,a,b\n", ["nolabel.csv", "no label column", "columns found: id, text, extra",
                                               "--label-column"]),
    ("ambiguous.csv", "text,sentence,label\na,b,c\n", ["ambiguous.csv", "text, sentence", "--text-column"]),
    ("ambiglabel.csv", "text,label,class\na,b,c\n", ["ambiglabel.csv", "label, class", "--label-column"]),
    ("emptytext.csv", "text,label\nfine,a\n  ,b\n", ["emptytext.csv", "line 3", "column 'text' is empty",
                                                      "delete the row"]),
    ("nolabelrow.csv", "text,label\nfine,a\nok,\n", ["nolabelrow.csv", "line 3", "no label", "add one"]),
    ("single.csv", "text,label\na,pos\nb,pos\n", ["single.csv", "only one class ('pos')", "--label-column"]),
    ("fields.csv", "text,label\nhello, world,pos\n", ["fields.csv", "line 2", "3 field(s)", "double quotes"]),
    ("fields.tsv", "text\tlabel\nhello\tworld\tpos\n", ["fields.tsv", "line 2", "stray tabs"]),
    ("dup.csv", "text,Text,label\na,b,c\n", ["dup.csv", "line 1", "appears twice"]),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 2}\n', ["bad.jsonl", "line 2", "invalid JSON",
                                                                         "one JSON object"]),
    ("list.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n', ["list.jsonl", "line 2", "expected a JSON object"]),
    ("notes.txt", "just text\n", ["notes.txt", "unlabelled", ".csv"]),
    ("sheet.xlsx", "PK\x03\x04", ["sheet.xlsx", "CSV (UTF-8)"]),
    ("headless.csv", "hello world,1\nbye,0\n", ["headless.csv", "columns found: hello world, 1",
                                                 "first row must be a header"]),
])
def test_bad_labelled_files(tmp_path, name, content, words):
    message = error_of(load_labelled, write(tmp_path, name, content))
    for word in words:
        assert word in message, (word, message)


def test_unclosed_quote_and_long_label_lists(tmp_path):
    message = error_of(load_labelled, write(tmp_path, "quote.csv", 'text,label\nfine,a\n"unclosed,a\nb,c\nd,e\n'))
    assert "quote.csv: line 3: a double quote opened on this line is not closed" in message and '""' in message
    message = error_of(load_labelled, write(tmp_path, "last.csv", 'text,label\nfine,a\n"unclosed,b\n'))
    assert "last.csv: line 3: a double quote" in message
    train = load_labelled(write(tmp_path, "many.csv", "text,label\n" + "".join(f"t,c{i:02d}\n" for i in range(40))))
    ev = load_labelled(write(tmp_path, "ev.csv", "text,label\nx,zz\ny,c01\n"), min_classes=1)
    message = error_of(check_eval_labels, train, ev)
    assert "c00, c01" in message and "…and 28 more" in message and "c39" not in message


def test_row_number_counts_multiline_quoted_fields(tmp_path):
    path = write(tmp_path, "multi.csv", 'text,label\n"line one\nline two",a\n"",b\n')
    message = error_of(load_labelled, path)
    assert "line 4" in message and "column 'text' is empty" in message


def test_not_utf8_names_the_line_and_byte(tmp_path):
    path = write(tmp_path, "latin1.csv", "text,label\nfine,a\n".encode() + "café,b\n".encode("latin-1"))
    message = error_of(load_labelled, path)
    assert "latin1.csv" in message and "line 3, character 4" in message and "offset 21" in message and "0xe9" in message
    assert "save the file as UTF-8" in message


def test_missing_file_folder_and_bad_override(tmp_path):
    assert "no such file" in error_of(load_labelled, tmp_path / "nope.csv")
    assert "is a folder" in error_of(load_labelled, tmp_path)
    path = write(tmp_path, "d.csv", "text,label\na,b\nc,d\n")
    message = error_of(load_labelled, path, label_column="tag")
    assert "no column 'tag'" in message and "--label-column" in message and "columns found: text, label" in message
    assert "task 'ranking' is not known" in error_of(load_labelled, path, task="ranking")


# ---------------------------------------------------------------- unlabelled
def test_unlabelled_txt_and_columns(tmp_path):
    assert load_unlabelled(write(tmp_path, "u.txt", "first line\n\n  second line  \n")) == ["first line", "second line"]
    assert load_unlabelled(write(tmp_path, "u.csv", "text,label\na,x\nb,y\n")) == ["a", "b"]
    assert load_unlabelled(write(tmp_path, "u.jsonl", '{"content": "a"}\n{"content": "b"}\n')) == ["a", "b"]
    assert load_unlabelled(write(tmp_path, "one.csv", "tweet\nhi\nho\n")) == ["hi", "ho"]
    assert load_unlabelled(write(tmp_path, "o.csv", "x,body\n1,hi\n"), text_column="body") == ["hi"]


def test_unlabelled_bad_files(tmp_path):
    assert "empty" in error_of(load_unlabelled, write(tmp_path, "u.txt", "\n\n"))
    message = error_of(load_unlabelled, write(tmp_path, "u.txt", b"ok\n\xff\xfe bad\n"))
    assert "u.txt" in message and "line 2" in message and "UTF-8" in message
    message = error_of(load_unlabelled, write(tmp_path, "u.csv", "a,b\n1,2\n"))
    assert "columns found: a, b" in message and "--text-column" in message


# ---------------------------------------------------------------- labels -> model config, batches
def test_apply_label_config_and_batches(tiny_bert):
    from transformers import AutoTokenizer, BertConfig

    data = LabelledData(None, ["the king", "the lord god of israel"], None, [1, 0], ["neg", "pos"], "classification")
    config = apply_label_config(BertConfig(), data)
    assert config.num_labels == 2 and config.id2label == {0: "neg", 1: "pos"} and config.label2id == {"neg": 0, "pos": 1}
    assert config.problem_type == "single_label_classification"
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert(num_labels=2))
    (batch,) = list(batches(data, tokenizer, batch_size=8, max_length=16))
    assert batch["input_ids"].shape == (2, 7)  # padded to the longest: [CLS] 5 words [SEP]
    assert batch["attention_mask"].sum(1).tolist() == [4, 7]
    assert batch["labels"].tolist() == [1, 0] and batch["index"] == [0, 1]
    shuffled = [b["index"] for b in batches(data, tokenizer, batch_size=1, shuffle=True, seed=3)]
    assert sorted(sum(shuffled, [])) == [0, 1]


# ---------------------------------------------------------------- the bundled dataset
def test_bundled_kjv_dataset():
    train, test = load_labelled(sample_dataset_path()), load_labelled(sample_eval_path())
    check_eval_labels(train, test)
    names = ["epistles", "gospels_acts", "law", "wisdom"]
    assert train.label_names == names and test.label_names == names
    assert train.class_counts() == {n: 750 for n in names}
    assert test.class_counts() == {n: 200 for n in names}
    assert all(20 <= len(t.split()) <= 60 for t in train.texts + test.texts)
    assert set(train.texts).isdisjoint(test.texts)
    unlabelled = load_unlabelled(sample_unlabelled_path())
    assert len(unlabelled) == 2000 and set(unlabelled).isdisjoint(train.texts + test.texts)
    folder = sample_dataset_path().parent
    assert sum(f.stat().st_size for f in folder.glob("kjv_*")) < 1.0e6


def test_bundled_wordnet_dataset():
    folder = sample_dataset_path().parent
    train, test = load_labelled(folder / "wordnet_nouns_train.csv"), load_labelled(folder / "wordnet_nouns_test.csv")
    check_eval_labels(train, test)
    names = ["act", "animal", "artifact", "cognition", "communication", "food", "person", "plant"]
    assert train.label_names == names and test.label_names == names
    assert train.class_counts() == {n: 600 for n in names}
    assert test.class_counts() == {n: 150 for n in names}
    assert all(5 <= len(t.split()) <= 40 for t in train.texts + test.texts)
    assert set(train.texts).isdisjoint(test.texts)
    unlabelled = load_unlabelled(folder / "wordnet_unlabelled.txt")
    assert len(unlabelled) == 1000 and set(unlabelled).isdisjoint(train.texts + test.texts)
    assert sum(f.stat().st_size for f in folder.glob("wordnet_*")) < 0.7e6


def test_json_list_reports_real_lines(tmp_path):
    text = '[\n  {"text": "a", "label": "x"},\n  {"text": "b", "label": "y"},\n  {"text": "", "label": "y"}\n]\n'
    message = error_of(load_labelled, write(tmp_path, "list.json", text))
    assert "list.json: line 4: column 'text' is empty" in message
    message = error_of(load_labelled, write(tmp_path, "broken.json", '[\n {"text": "a", "label": "x"},\n {"text": b}\n]'))
    assert "broken.json: line 3: invalid JSON" in message


def test_load_eval_follows_the_training_data(tmp_path):
    train = load_labelled(write(tmp_path, "train.csv", "text,score\na,0.5\nb,1.5\n"))
    ev = load_eval(write(tmp_path, "test.csv", "text,score\nc,1\nd,2\n"), train)  # whole numbers, still regression
    assert ev.task == "regression" and ev.labels == [1.0, 2.0]
    train = load_labelled(write(tmp_path, "t2.csv", "text,label\na,x\nb,y\nc,z\n"))
    ev = load_eval(write(tmp_path, "e2.csv", "text,label\nd,z\n"), train)  # one class is fine for evaluation
    assert ev.label_names == ["x", "y", "z"] and ev.labels == [2]
    message = error_of(load_eval, write(tmp_path, "pairs.csv", "sentence1,sentence2,label\na,b,x\n"), train)
    assert "pairs.csv" in message and "text pairs" in message and "t2.csv" in message and "--text-pair-column" in message


@pytest.mark.skipif(shutil.which("bible") is None, reason="Debian's bible-kjv / bible-kjv-text packages are not installed")
def test_bundled_kjv_dataset_is_what_the_builder_writes(tmp_path):
    import runpy

    builder = runpy.run_path(str(sample_dataset_path().parent / "build_kjv_dataset.py"))
    stats = builder["build"](tmp_path, seed=13)
    assert stats["unlabelled"] == 2000 and sum(stats["train"].values()) == 3000
    for name in ("kjv_sections_train.csv", "kjv_sections_test.csv", "kjv_unlabelled.txt"):
        assert (tmp_path / name).read_bytes() == (sample_dataset_path().parent / name).read_bytes(), name


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="Debian's wordnet-base package is not installed")
def test_bundled_wordnet_dataset_is_what_the_builder_writes(tmp_path):
    import runpy

    builder = runpy.run_path(str(sample_dataset_path().parent / "build_wordnet_dataset.py"))
    stats = builder["build"](tmp_path, seed=13)
    assert stats["unlabelled"] == 1000 and sum(stats["train"].values()) == 4800
    for name in ("wordnet_nouns_train.csv", "wordnet_nouns_test.csv", "wordnet_unlabelled.txt"):
        assert (tmp_path / name).read_bytes() == (sample_dataset_path().parent / name).read_bytes(), name

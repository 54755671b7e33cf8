"""load_splits from local files, built-in generators and (offline) the hub; every error is one clear line."""

from __future__ import annotations

import json
import logging
import time

import pytest

from attnlab.data import SPLITS, check_labels, listops, load_splits
from attnlab.errors import DataError

TEXT = {"text": "text", "label": "label"}


def rows(n: int, split: str | None = None, *, text: str = "text") -> list[dict]:
    out = [{text: f"review {i} é", "label": i % 2} for i in range(n)]
    if split is not None:
        for row in out:
            row["split"] = split
    return out


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def write_csv(path, records) -> str:
    import pandas as pd

    pd.DataFrame(records).to_csv(path, index=False)
    return str(path)


def write_parquet(path, records) -> str:
    import pandas as pd

    pd.DataFrame(records).to_parquet(path, index=False)
    return str(path)


def files(tmp_path, **data):
    return load_splits({"source": "files", **data}, columns=TEXT, builtin=None, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("writer", [write_jsonl, write_csv, write_parquet])
def test_one_file_per_split(tmp_path, writer):
    ext = {write_jsonl: "jsonl", write_csv: "csv", write_parquet: "parquet"}[writer]
    data = {
        split: writer(tmp_path / f"{split}.{ext}", rows(n))
        for split, n in [("train", 20), ("validation", 5), ("test", 6)]
    }
    splits = files(tmp_path, **data)
    assert tuple(splits) == SPLITS
    assert [len(splits[s]) for s in SPLITS] == [20, 5, 6]
    assert splits["train"][3] == {"text": "review 3 é", "label": 1}


def test_json_array_file(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows(30)), encoding="utf-8")
    splits = files(tmp_path, train=str(path))
    assert len(splits["train"]) + len(splits["validation"]) == 30


def test_missing_validation_is_carved_and_test_falls_back(tmp_path, caplog):
    train = write_jsonl(tmp_path / "train.jsonl", rows(50))
    with caplog.at_level(logging.INFO):
        a = files(tmp_path, train=train)
        b = files(tmp_path, train=train)
    assert a == b  # deterministic carve
    assert len(a["train"]) == 45 and len(a["validation"]) == 5 and a["test"] == a["validation"]
    assert not {r["text"] for r in a["train"]} & {r["text"] for r in a["validation"]}
    assert "10% of train (5 of 50 rows)" in caplog.text
    assert "validation split is used as test" in caplog.text


def test_one_file_with_split_column_and_aliases(tmp_path):
    records = rows(10, "train") + rows(3, "dev") + rows(4, "Test") + rows(2, "val")
    splits = files(tmp_path, path=write_jsonl(tmp_path / "all.jsonl", records))
    assert [len(splits[s]) for s in SPLITS] == [10, 5, 4]


def test_split_column_with_another_name_and_unknown_values(tmp_path):
    records = [dict(r, part=r.pop("split")) for r in rows(6, "train") + rows(2, "test")]
    path = write_jsonl(tmp_path / "all.jsonl", records)
    with pytest.raises(DataError, match=r"no split column 'split'.*set task.data.split_column=<column>"):
        files(tmp_path, path=path)
    assert len(files(tmp_path, path=path, split_column="part")["test"]) == 2
    bad = write_jsonl(tmp_path / "bad.jsonl", rows(6, "train") + rows(2, "holdout"))
    with pytest.raises(DataError, match="unknown value.*holdout.*use train, validation or test"):
        files(tmp_path, path=bad)


def test_column_remapping(tmp_path):
    train = write_csv(tmp_path / "train.csv", rows(20, text="review"))
    splits = load_splits(
        {"source": "files", "train": train},
        columns={"text": "review", "label": "label"},
        builtin=None,
        cache_dir=tmp_path,
    )
    assert set(splits["train"][0]) == {"text", "label"}


def test_dot_path_columns_for_translation_rows(tmp_path):
    records = [{"translation": {"de": f"hallo {i}", "en": f"hello {i}"}} for i in range(12)]
    train = write_jsonl(tmp_path / "train.jsonl", records)
    columns = {"source": "translation.de", "target": "translation.en"}
    splits = load_splits(
        {"source": "files", "train": train}, columns=columns, builtin=None, cache_dir=tmp_path
    )
    assert all(r["source"].replace("hallo", "hello") == r["target"] for s in SPLITS for r in splits[s])
    with pytest.raises(DataError, match=r"translation has no 'fr'.*keys: de, en"):
        load_splits(
            {"source": "files", "train": train},
            columns={"source": "translation.fr"},
            builtin=None,
            cache_dir=tmp_path,
        )


def test_limit_takes_a_deterministic_mixed_subset(tmp_path):
    records = [{"text": f"t{i}", "label": int(i >= 100)} for i in range(200)]  # sorted by label
    train = write_jsonl(tmp_path / "train.jsonl", records)
    data = {"train": train, "limit": {"train": 40, "validation": None}}
    a, b = files(tmp_path, **data), files(tmp_path, **data)
    assert a == b and len(a["train"]) == 40
    assert len(check_labels(a["train"])) == 2
    with pytest.raises(DataError, match=r"task.data.limit.trian \(did you mean 'train'\?\)"):
        files(tmp_path, train=train, limit={"trian": 3})


# ---- errors -------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"data file not found: .*nope\.jsonl; check task.data.train="):
        files(tmp_path, train=str(tmp_path / "nope.jsonl"))


def test_unsupported_extension(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("hello\n")
    with pytest.raises(
        DataError, match=r"unsupported data file extension '.txt'.*use one of .jsonl, .json, .csv"
    ):
        files(tmp_path, train=str(path))


def test_missing_column_names_the_closest_and_the_fix(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", rows(20, text="texts"))
    with pytest.raises(DataError) as err:
        files(tmp_path, train=train)
    message = str(err.value)
    assert "column 'text' not found" in message and "(did you mean 'texts'?)" in message
    assert (
        "available columns: texts, label" in message
        and "remap with task.data.columns.text=<column>" in message
    )
    assert "\n" not in message


def test_empty_split(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", rows(20))
    (tmp_path / "val.jsonl").write_text("")
    with pytest.raises(DataError, match=r"val.jsonl \(task.data.validation\) is empty"):
        files(tmp_path, train=train, validation=str(tmp_path / "val.jsonl"))


def test_one_class_labels():
    with pytest.raises(
        DataError, match=r"1 class\(es\) in 'label' \(only 1\); a classifier needs at least two"
    ):
        check_labels([{"label": 1}] * 5)
    assert check_labels([{"label": 0}, {"label": 1}, {"label": 1}]) == {0: 1, 1: 2}


def test_non_utf8_bytes_are_replaced_counted_and_warned(tmp_path, caplog):
    path = tmp_path / "train.jsonl"
    good = "".join(json.dumps(r) + "\n" for r in rows(20)).encode()
    path.write_bytes(good + b'{"text": "caf\xe9 \xff\xfe ok", "label": 0}\n')
    with caplog.at_level(logging.WARNING):
        splits = files(tmp_path, train=str(path))
    texts = [r["text"] for s in ("train", "validation") for r in splits[s]]
    assert "caf\ufffd \ufffd\ufffd ok" in texts
    assert "is not valid UTF-8: replaced 3 undecodable byte sequence(s)" in caplog.text


def test_files_source_needs_files(tmp_path):
    with pytest.raises(DataError, match="task.data.train=<file>"):
        files(tmp_path)


def test_unknown_source():
    with pytest.raises(DataError, match=r"unknown data source 'file' \(did you mean 'files'\?\)"):
        load_splits({"source": "file"}, columns=TEXT, builtin=None)


# ---- builtin ------------------------------------------------------------------------------------


def test_builtin_source_passes_parameters_and_limits():
    data = {
        "source": "builtin",
        "builtin": {"n_train": 50, "n_validation": 10, "n_test": 10, "seed": 3},
        "limit": {"train": 20},
    }
    splits = load_splits(data, columns=TEXT, builtin=listops)
    assert [len(splits[s]) for s in SPLITS] == [20, 10, 10]
    assert set(splits["test"][0]) == {"text", "label"}


def test_builtin_unknown_parameter_and_missing_generator():
    with pytest.raises(
        DataError, match=r"task.data.builtin.max_dept for listops \(did you mean 'max_depth'\?\)"
    ):
        load_splits({"source": "builtin", "builtin": {"max_dept": 3}}, columns=TEXT, builtin=listops)
    with pytest.raises(DataError, match="no built-in dataset; use task.data.source=files"):
        load_splits({"source": "builtin"}, columns=TEXT, builtin=None)


# ---- hub ----------------------------------------------------------------------------------------


def test_hub_fails_fast_and_clearly_when_unreachable(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.attnlab.invalid")  # .invalid never resolves
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        load_splits({"source": "hf", "name": "imdb"}, columns=TEXT, builtin=None)
    assert time.perf_counter() - start < 20
    message = str(err.value)
    assert message.startswith("could not load hub dataset 'imdb' (no network or unknown name: ")
    assert (
        "for offline runs use task.data.source=builtin or task.data.source=files task.data.path=" in message
    )
    assert "\n" not in message


def test_hub_on_this_machine_fails_fast_when_offline():
    from attnlab.data.hub import endpoint, unreachable_reason

    if unreachable_reason(endpoint()) is None:
        pytest.skip("the hub is reachable here")
    start = time.perf_counter()
    with pytest.raises(DataError, match="could not load hub dataset 'imdb'"):
        load_splits({"source": "hf", "name": "imdb"}, columns=TEXT, builtin=None)
    assert time.perf_counter() - start < 20


def test_hub_needs_a_name():
    with pytest.raises(DataError, match="task.data.name=<hub dataset>"):
        load_splits({"source": "hf"}, columns=TEXT, builtin=None)


def test_empty_builtin_split_is_an_error():
    data = {"source": "builtin", "builtin": {"n_train": 20, "n_validation": 0, "n_test": 5}}
    with pytest.raises(DataError, match="split 'validation' of the built-in dataset is empty"):
        load_splits(data, columns=TEXT, builtin=listops)


def test_hub_split_names_are_mapped_and_nested_columns_read(monkeypatch, tmp_path):
    import datasets

    def fake_load_dataset(name, subset, cache_dir=None):
        assert (name, subset) == ("wmt14", "de-en")
        make = lambda n: datasets.Dataset.from_list(  # noqa: E731
            [{"translation": {"de": f"hallo {i}", "en": f"hello {i}"}} for i in range(n)]
        )
        return datasets.DatasetDict({"train": make(30), "dev": make(4), "unsupervised": make(2)})

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # skips the network probe
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = {"source": "hf", "name": "wmt14", "subset": "de-en", "limit": {"train": 10}}
    splits = load_splits(
        data,
        columns={"source": "translation.de", "target": "translation.en"},
        builtin=None,
        cache_dir=tmp_path,
    )
    assert [len(splits[s]) for s in SPLITS] == [10, 4, 4]
    assert splits["validation"][0] == {"source": "hallo 0", "target": "hello 0"}


def test_accepts_an_omegaconf_data_config(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    train = write_jsonl(tmp_path / "train.jsonl", rows(30, text="review"))
    data = omegaconf.OmegaConf.create(
        {"source": "files", "name": None, "path": None, "train": train, "validation": None, "test": None,
         "split_column": "split", "limit": {"train": 20, "validation": None, "test": None}, "builtin": {}}
    )  # fmt: skip
    columns = omegaconf.OmegaConf.create({"text": "review", "label": "label"})
    splits = load_splits(data, columns=columns, builtin=None, cache_dir=tmp_path)
    assert len(splits["train"]) == 20 and set(splits["train"][0]) == {"text", "label"}
    built = load_splits(
        omegaconf.OmegaConf.create(
            {"source": "builtin", "builtin": {"n_train": 30, "n_validation": 5, "n_test": 5}}
        ),
        columns=TEXT,
        builtin=listops,
    )
    assert len(built["train"]) == 30


def test_malformed_file_is_a_data_error(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": broken\n')
    with pytest.raises(
        DataError, match=r"could not read .*train.jsonl as jsonl: .*; check the file's format"
    ):
        files(tmp_path, train=str(path))

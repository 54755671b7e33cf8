"""Tokenizers round-trip; encode_texts truncates and says so; pad_batch masks the padding."""

from __future__ import annotations

import logging

import pytest
import torch

from attnlab.data import BPETokenizer, ByteTokenizer, Tokenizer, build_tokenizer, encode_texts, pad_batch
from attnlab.errors import DataError

TEXTS = ["Grüße aus Köln — 東京 🚀", "plain ascii text", "", "naïve café"]


def test_bytes_round_trip_including_non_ascii():
    tok = build_tokenizer("bytes")
    assert isinstance(tok, ByteTokenizer) and isinstance(tok, Tokenizer)
    assert tok.vocab_size == 261
    assert len({tok.pad_id, tok.bos_id, tok.eos_id, tok.cls_id, tok.unk_id}) == 5
    for text in TEXTS:
        ids = tok.encode(text)
        assert all(5 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
        assert tok.decode([tok.cls_id, tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == text


def test_bytes_decode_never_fails_on_broken_utf8():
    tok = ByteTokenizer()
    ids = tok.encode("é")[:1]  # half a character
    assert tok.decode(ids) == "\ufffd"


def test_bpe_trains_round_trips_and_reloads_from_cache(tmp_path):
    corpus = [f"the cat number {i} sat on the mat, café {i % 7}" for i in range(300)]
    tok = build_tokenizer("bpe", train_texts=corpus, vocab_size=400, cache_dir=tmp_path)
    assert isinstance(tok, BPETokenizer) and isinstance(tok, Tokenizer)
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.cls_id, tok.unk_id) == (0, 1, 2, 3, 4)
    assert 261 < tok.vocab_size <= 400
    for text in [*TEXTS, corpus[3]]:
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(corpus[5])) < len(corpus[5])  # merges were learned
    cached = list(tmp_path.glob("bpe-400-*.json"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    again = build_tokenizer("bpe", train_texts=corpus, vocab_size=400, cache_dir=tmp_path)
    assert cached[0].stat().st_mtime_ns == mtime
    assert again.encode(corpus[9]) == tok.encode(corpus[9])
    other = build_tokenizer("bpe", train_texts=corpus[:100], vocab_size=400, cache_dir=tmp_path)
    assert other.vocab_size > 0 and len(list(tmp_path.glob("bpe-400-*.json"))) == 2


def test_unknown_tokenizer_names_the_choices():
    with pytest.raises(
        DataError, match=r"unknown tokenizer 'bpee' \(did you mean 'bpe'\?\); choose bytes or bpe"
    ):
        build_tokenizer("bpee")


def test_bpe_without_texts_is_a_data_error():
    with pytest.raises(DataError, match="needs training texts"):
        build_tokenizer("bpe")


def test_encode_texts_truncates_counts_and_warns(caplog):
    tok = ByteTokenizer()
    texts = ["a" * 3, "b" * 10, "c" * 20]
    with caplog.at_level(logging.WARNING):
        ids, n = encode_texts(texts, tok, 8, add_cls=True, add_eos=True, what="source")
    assert n == 2
    assert [len(x) for x in ids] == [5, 8, 8]
    assert ids[1][0] == tok.cls_id and ids[1][-1] == tok.eos_id
    assert tok.decode(ids[2]) == "c" * 6
    assert (
        "truncated 2 of 3 source sequences to max_len=8 tokens (longest was 22); raise model.max_len"
        in caplog.text
    )


def test_encode_texts_without_truncation_is_silent(caplog):
    with caplog.at_level(logging.WARNING):
        ids, n = encode_texts(["hi"], ByteTokenizer(), 10, add_bos=True, add_eos=True)
    assert n == 0 and ids == [[1, ord("h") + 5, ord("i") + 5, 2]]
    assert caplog.text == ""


def test_encode_texts_needs_room_for_text():
    with pytest.raises(DataError, match="raise model.max_len"):
        encode_texts(["x"], ByteTokenizer(), 2, add_bos=True, add_eos=True)


def test_pad_batch_shapes_and_mask():
    ids, mask = pad_batch([[7, 8, 9], [5], []], pad_id=0)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids.tolist() == [[7, 8, 9], [5, 0, 0], [0, 0, 0]]
    assert mask.tolist() == [[False, False, False], [False, True, True], [True, True, True]]
    ids, mask = pad_batch([[1, 2]], pad_id=3)
    assert ids.shape == (1, 2) and not mask.any()

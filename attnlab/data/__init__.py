"""Data for the tasks: sources (hub, local files, built-in generators), tokenizers, collation.

    from attnlab.data import load_splits, build_tokenizer, encode_texts, pad_batch

Plain Python/torch/datasets/tokenizers: nothing here imports Lightning or Hydra.
"""

from attnlab.data.baselines import copy_baseline, first_line_baseline, lead_baseline, split_sentences
from attnlab.data.collate import encode_texts, pad_batch
from attnlab.data.listops import listops
from attnlab.data.seq2seq_builtin import summarisation_builtin, translation_builtin
from attnlab.data.sources import check_labels, load_splits
from attnlab.data.splits import SPLITS
from attnlab.data.tokenizers import BPETokenizer, ByteTokenizer, Tokenizer, build_tokenizer

__all__ = [
    "SPLITS",
    "BPETokenizer",
    "ByteTokenizer",
    "Tokenizer",
    "build_tokenizer",
    "check_labels",
    "copy_baseline",
    "encode_texts",
    "first_line_baseline",
    "lead_baseline",
    "listops",
    "load_splits",
    "pad_batch",
    "split_sentences",
    "summarisation_builtin",
    "translation_builtin",
]

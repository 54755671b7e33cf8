"""Tokenizers: raw UTF-8 bytes (no vocabulary file) or a byte-level BPE trained on the train texts.

`bpe_placeholders` is the same BPE with a copy-friendly pre-tokenizer: printf conversions (%s,
%1$s, %-10.3ld), brace fields ({name}), shell variables ($HOME), --options and snake_case
identifiers are single pre-tokens (GPT-2's split cuts "%s" into "%" + "s" and "--force" into
"--" + "force"), so BPE can learn each frequent one as one token that a model copies across.

Both reserve the same special ids, so code that pads or adds markers never asks which one it has:

    pad 0, bos 1, eos 2, cls 3, unk 4; then the bytes (ByteTokenizer: id = byte + 5) or the BPE merges.

`encode` adds no special tokens; `decode` drops them. BPE is byte-level, so every text round-trips
and <unk> is never produced (it exists for the protocol). A trained BPE is cached as JSON under
`cache_dir`, keyed by a hash of the training texts and the vocabulary size, and reloaded when present.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from attnlab.errors import DataError, did_you_mean

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<cls>", "<unk>")  # ids 0..4, same order for every tokenizer
PAD_ID, BOS_ID, EOS_ID, CLS_ID, UNK_ID = range(len(SPECIAL_TOKENS))
BPE_TOKENIZERS = ("bpe", "bpe_placeholders")
TOKENIZERS = ("bytes", *BPE_TOKENIZERS)
# GPT-2's pre-tokenizer regex (what tokenizers' ByteLevel applies), with copy-friendly alternatives first.
_GPT2_SPLIT = r"'(?:s|t|re|ve|m|ll|d)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
WHOLE_PIECES = (
    r" ?%(?:\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|t)?[diouxXeEfFgGaAcsp%]"
    r"| ?\{\w*\}"
    r"| ?\$\{?[A-Za-z_]\w*\}?"
    r"| ?(?<![\p{L}\p{N}_-])--?[A-Za-z][\w-]*"
    r"| ?[A-Za-z]\w*_\w+"
)


@runtime_checkable
class Tokenizer(Protocol):
    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int
    cls_id: int
    unk_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class _Specials:
    pad_id, bos_id, eos_id, cls_id, unk_id = PAD_ID, BOS_ID, EOS_ID, CLS_ID, UNK_ID


class ByteTokenizer(_Specials):
    """UTF-8 bytes shifted past the special ids: vocab_size 261, nothing to train or store."""

    offset = len(SPECIAL_TOKENS)
    vocab_size = offset + 256

    def encode(self, text: str) -> list[int]:
        return [b + self.offset for b in text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        data = bytes(int(i) - self.offset for i in ids if self.offset <= int(i) < self.vocab_size)
        return data.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=261)"


class BPETokenizer(_Specials):
    """A trained `tokenizers` byte-level BPE; build it with `build_tokenizer("bpe", train_texts=...)`."""

    def __init__(self, tokenizer) -> None:  # a tokenizers.Tokenizer whose ids 0..4 are SPECIAL_TOKENS
        for i, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != i:
                raise DataError(
                    f"BPE tokenizer file has {token} at id {tokenizer.token_to_id(token)}, expected {i}; delete the cached file to retrain it"
                )
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def build_tokenizer(
    kind: str = "bytes",
    *,
    train_texts: Iterable[str] = (),
    vocab_size: int = 8000,
    cache_dir: str | Path | None = None,
) -> Tokenizer:
    """'bytes' (default), or 'bpe' / 'bpe_placeholders' trained on `train_texts` (cached under `cache_dir`)."""
    if kind == "bytes":
        return ByteTokenizer()
    if kind not in BPE_TOKENIZERS:
        raise DataError(
            f"unknown tokenizer '{kind}'{did_you_mean(kind, TOKENIZERS)}; choose {' or '.join(TOKENIZERS)}"
        )
    if vocab_size <= len(SPECIAL_TOKENS) + 256:
        raise DataError(
            f"bpe vocab_size={vocab_size} is too small; use more than {len(SPECIAL_TOKENS) + 256} (specials + bytes)"
        )
    texts = [str(t) for t in train_texts]
    if not texts:
        raise DataError(
            "the bpe tokenizer needs training texts; pass the train split's texts, or use tokenizer kind 'bytes'"
        )
    from tokenizers import Tokenizer as HFTokenizer

    file = None
    if cache_dir is not None:
        file = Path(cache_dir) / f"{kind}-{vocab_size}-{_fingerprint(texts, vocab_size, kind)}.json"
        if file.is_file():
            log.info("loading cached BPE tokenizer %s", file)
            return BPETokenizer(HFTokenizer.from_file(str(file)))
    tokenizer = _train_bpe(texts, vocab_size, whole_placeholders=kind == "bpe_placeholders")
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")  # one per process: runs that start together
        tokenizer.save(str(tmp))  # (a study's parallel cells) each write their own, then
        tmp.replace(file)  # replace atomically: no run reads half a file, none loses its own
        log.info("trained BPE tokenizer (vocab %d) cached at %s", tokenizer.get_vocab_size(), file)
    return BPETokenizer(tokenizer)


def _train_bpe(texts: list[str], vocab_size: int, *, whole_placeholders: bool = False):
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    tokenizer = HFTokenizer(models.BPE(unk_token="<unk>"))
    if whole_placeholders:  # our split (placeholders whole, else GPT-2's), then bytes -> symbols only
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(f"{WHOLE_PIECES}|{_GPT2_SPLIT}"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def _fingerprint(texts: list[str], vocab_size: int, kind: str = "bpe") -> str:
    version = "bytelevel-bpe-v1" if kind == "bpe" else f"{kind}-v1"  # "bpe" keeps its old cache keys
    digest = hashlib.sha256(f"{version}|{vocab_size}|{len(texts)}".encode())
    for text in texts:
        digest.update(text.encode("utf-8", errors="replace"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]

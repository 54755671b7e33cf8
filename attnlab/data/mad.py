"""MAD's six synthetic tasks (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
Architectures"; athms/mad-lab), generated offline and deterministic in `seed`.

Every example is a pair of equal-length token lists, as in mad-lab: `ids` (what the model reads) and
`targets` (what each position must output; IGNORE where nothing is asked). Loss and accuracy count
the asked positions only, in every split. Unlike task=mqar's rows, a target need not be the next
input token: in selective copying and memorization the answer never appears in the input, and
compression decodes every token from the last position alone (tasks/mad.py). The kinds:

in_context_recall   keys in [0, V/2), values in [V/2, V). seq_len/2 key-value pairs; each key keeps
                    one value within an example (a fresh one per example). Asked: the value after
                    every key that already appeared earlier in the example (multi-query), and after
                    the final key, always one seen before.
noisy_recall        in_context_recall with noise: each pair slot is, with probability frac_noise,
                    two tokens from a separate noise vocabulary [V - noise_vocab_size, V) instead
                    (keys and values share the rest). Asked: as in_context_recall.
fuzzy_recall        keys are runs of 1..k_motif_size distinct key tokens, values runs of
                    1..v_motif_size value tokens (V - 1 is the left padding). One probe pair is
                    placed inside the example and its key asked again at the end. Asked: every
                    token of the value after a key seen before. Validation and test keys all have
                    k_motif_size tokens (mad-lab's test setting: prompt at the longest key).
selective_copying   num_tokens_to_copy tokens from [0, V - 2) with blanks (V - 2) scattered among
                    them, then the copy token (V - 1), then num_tokens_to_copy blanks. Asked: at
                    the i-th trailing blank, the i-th non-blank token, in order.
compression         seq_len - 1 tokens from [0, V - 1), then the compression token (V - 1). Asked:
                    every one of the seq_len - 1 tokens, decoded from the compression token's
                    representation alone (an MLP reads it with a position; tasks/mad.py).
memorization        one fixed key -> value map for the whole data set (all splits): keys
                    [0, (V - 1) // 2), values [(V - 1) // 2, V - 1), drawn once from the seed.
                    An example is seq_len/2 (key, insert token V - 1) pairs. Asked: at each insert
                    token, the key's value — which never appears in any input: it is learnt from
                    the training set, and the test split asks the same map.

Each kind's function below has its own knobs, defaulting to mad-lab's baseline task settings
(configs/tasks/*.yml); `mad` dispatches on `kind`, and a knob left None takes the kind's default.
A knob a kind does not use is an error, not ignored.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from attnlab.errors import DataError, did_you_mean

IGNORE = -100  # a target that asks nothing (PyTorch's ignore_index, mad-lab's target_ignore_idx)
SEED_SALT = 0x4D4144  # "MAD": keeps these streams apart from other generators' at the same seed
SPLIT_SIZES = {"n_train": "train", "n_validation": "validation", "n_test": "test"}

Row = dict[str, list[int]]


# ---- the six kinds: one function each; its signature holds the kind's knobs and their defaults ----
def in_context_recall(
    rng: np.random.Generator,
    is_test: bool,
    *,
    vocab_size: int = 16,
    seq_len: int = 128,
    frac_noise: float = 0.0,
    noise_vocab_size: int = 0,
) -> Row:
    _check_even(seq_len, "in_context_recall", minimum=4)
    _check_noise(frac_noise, noise_vocab_size, vocab_size, "in_context_recall", reserved=0)
    half = (vocab_size - noise_vocab_size) // 2
    keys, values = np.arange(half), np.arange(half, 2 * half)
    noise = np.arange(vocab_size - noise_vocab_size, vocab_size)
    slots = seq_len // 2 - 1  # pair slots before the final query
    kept = rng.integers(slots)  # one slot is always a pair, so the final query has a key to ask
    stream, asked, kv = [], [], {}
    for slot in range(slots):
        if frac_noise > 0 and slot != kept and rng.random() < frac_noise:
            stream += rng.choice(noise, size=2).tolist()
            asked += [False, False]
            continue
        key = int(rng.choice(keys))
        seen = key in kv
        kv.setdefault(key, int(rng.choice(values)))
        stream += [key, kv[key]]
        asked += [False, seen]
    probe = int(rng.choice(list(kv)))  # uniform over the keys shown
    stream += [probe, kv[probe]]
    asked += [False, True]
    return _shifted(stream, asked)


def noisy_recall(
    rng: np.random.Generator,
    is_test: bool,
    *,
    vocab_size: int = 32,
    seq_len: int = 128,
    frac_noise: float = 0.2,
    noise_vocab_size: int = 16,
) -> Row:
    if not frac_noise > 0:
        raise DataError(
            f"mad noisy_recall frac_noise={frac_noise} must be > 0 (no noise is kind=in_context_recall); "
            "set task.data.builtin.frac_noise=0.2"
        )
    return in_context_recall(
        rng,
        is_test,
        vocab_size=vocab_size,
        seq_len=seq_len,
        frac_noise=frac_noise,
        noise_vocab_size=noise_vocab_size,
    )


def fuzzy_recall(
    rng: np.random.Generator,
    is_test: bool,
    *,
    vocab_size: int = 16,
    seq_len: int = 128,
    k_motif_size: int = 3,
    v_motif_size: int = 3,
    frac_noise: float = 0.0,
    noise_vocab_size: int = 0,
) -> Row:
    _check_noise(frac_noise, noise_vocab_size, vocab_size, "fuzzy_recall", reserved=1)
    for name, size in (("k_motif_size", k_motif_size), ("v_motif_size", v_motif_size)):
        if size < 1:
            raise DataError(f"mad fuzzy_recall {name}={size} must be >= 1; set task.data.builtin.{name}=3")
    pad = vocab_size - 1
    half = (vocab_size - 1 - noise_vocab_size) // 2
    keys, values = np.arange(half), np.arange(half, 2 * half)
    noise = np.arange(vocab_size - 1 - noise_vocab_size, vocab_size - 1)
    if half < max(k_motif_size, v_motif_size):
        raise DataError(
            f"mad fuzzy_recall vocab_size={vocab_size} has {half} key and value tokens, fewer than a motif of "
            f"{max(k_motif_size, v_motif_size)} distinct tokens; set task.data.builtin.vocab_size >= "
            f"{2 * max(k_motif_size, v_motif_size) + 1 + noise_vocab_size}"
        )
    widest = k_motif_size + v_motif_size
    if seq_len < 3 * widest:
        raise DataError(
            f"mad fuzzy_recall seq_len={seq_len} cannot hold a probe pair, its query and one more pair of up to "
            f"{widest} tokens; set task.data.builtin.seq_len >= {3 * widest}"
        )

    def key_size() -> int:  # validation/test prompt at the longest key, as mad-lab's test set
        return k_motif_size if is_test else int(rng.integers(1, k_motif_size + 1))

    def motif(alphabet: np.ndarray, size: int) -> tuple[int, ...]:
        return tuple(int(t) for t in rng.choice(alphabet, size=size, replace=False))

    probe_key = motif(keys, key_size())
    probe_value = motif(values, int(rng.integers(1, v_motif_size + 1)))
    probe = len(probe_key) + len(probe_value)
    stop = seq_len - probe - widest  # pairs are added while the stream is shorter than this
    # where the probe pair goes; <= stop - widest, so some iteration starts at or past it
    probe_at = int(rng.integers(stop - widest + 1))
    stream, asked, kv = [], [], {}
    placed = False
    while len(stream) < stop:
        if not placed and len(stream) >= probe_at:
            stream += [*probe_key, *probe_value]
            asked += [False] * probe
            kv[probe_key], placed = probe_value, True
            continue
        k_size, v_size = key_size(), int(rng.integers(1, v_motif_size + 1))
        if frac_noise > 0 and rng.random() < frac_noise:
            stream += rng.choice(noise, size=k_size + v_size).tolist()
            asked += [False] * (k_size + v_size)
            continue
        key = motif(keys, k_size)
        seen = key in kv
        if key == probe_key:  # drawn before its planned place: it is placed here, with its value
            placed = True
        value = kv.setdefault(key, probe_value if key == probe_key else motif(values, v_size))
        stream += [*key, *value]
        asked += [False] * len(key) + [seen] * len(value)
    stream += [*probe_key, *probe_value]
    asked += [False] * len(probe_key) + [True] * len(probe_value)
    padding = seq_len + 1 - len(stream)  # left padding to seq_len + 1 tokens, so the model reads seq_len
    return _shifted([pad] * padding + stream, [False] * padding + asked)


def selective_copying(
    rng: np.random.Generator,
    is_test: bool,
    *,
    vocab_size: int = 16,
    seq_len: int = 256,
    num_tokens_to_copy: int = 16,
) -> Row:
    n = num_tokens_to_copy
    if n < 1:
        raise DataError(f"mad selective_copying num_tokens_to_copy={n} must be >= 1; set it to 16")
    if seq_len <= 2 * n + 1:
        raise DataError(
            f"mad selective_copying seq_len={seq_len} cannot hold {n} tokens, their copies and a copy token "
            f"(needs seq_len > 2 * num_tokens_to_copy + 1 = {2 * n + 1}); raise seq_len or lower num_tokens_to_copy"
        )
    if vocab_size < 3:
        raise DataError(f"mad selective_copying vocab_size={vocab_size} must be >= 3 (blank, copy, a token)")
    blank, copy = vocab_size - 2, vocab_size - 1
    tokens = rng.integers(vocab_size - 2, size=n)  # (n,) with repeats, as mad-lab
    blanks = seq_len - 2 * n - 1
    before = np.bincount(rng.integers(n, size=blanks), minlength=n)  # blanks placed before token j
    data = [t for j in range(n) for t in [blank] * int(before[j]) + [int(tokens[j])]]
    ids = data + [copy] + [blank] * n
    targets = [IGNORE] * (len(data) + 1) + tokens.tolist()
    return {"ids": ids, "targets": targets}


def compression(rng: np.random.Generator, is_test: bool, *, vocab_size: int = 16, seq_len: int = 32) -> Row:
    if vocab_size < 2 or seq_len < 2:
        raise DataError(
            f"mad compression needs vocab_size >= 2 and seq_len >= 2 (got {vocab_size}, {seq_len}); "
            "set task.data.builtin.vocab_size=16 task.data.builtin.seq_len=32"
        )
    tokens = rng.integers(vocab_size - 1, size=seq_len - 1).tolist()
    return {"ids": [*tokens, vocab_size - 1], "targets": [*tokens, IGNORE]}


def memorization(
    rng: np.random.Generator,
    is_test: bool,
    *,
    vocab_size: int = 256,
    seq_len: int = 32,
    kv_map: dict[int, int] | None = None,
) -> Row:
    insert = vocab_size - 1
    assert kv_map is not None  # made once per data set by `mad` (memorization_map)
    keys = rng.choice(np.array(sorted(kv_map)), size=seq_len // 2)  # with repeats, as mad-lab
    ids = [t for k in keys for t in (int(k), insert)]
    targets = [t for k in keys for t in (IGNORE, kv_map[int(k)])]
    return {"ids": ids, "targets": targets}


def memorization_map(seed: int, vocab_size: int) -> dict[int, int]:
    """The one key -> value map of a memorization data set: each key of [0, (V-1)//2) gets a distinct
    value of [(V-1)//2, V-1), drawn from `seed` (mad-lab: shuffled keys zipped with shuffled values)."""
    rng = np.random.default_rng([seed, SEED_SALT, 0x4B56])  # "KV"
    half = (vocab_size - 1) // 2
    values = rng.permutation(np.arange(half, vocab_size - 1))[:half]
    return {k: int(v) for k, v in enumerate(values)}


KINDS: dict[str, Callable[..., Row]] = {
    "in_context_recall": in_context_recall,
    "fuzzy_recall": fuzzy_recall,
    "noisy_recall": noisy_recall,
    "selective_copying": selective_copying,
    "compression": compression,
    "memorization": memorization,
}
# mad-lab's baseline number of training examples per kind (configs/tasks/*.yml); the rest use 12,800
BASE_TRAIN = {"memorization": 256}
BASE_TRAIN_DEFAULT = 12_800


# ---- the registered generator: task.data.builtin.* is this signature -----------------------------
def mad(
    *,
    kind: str = "in_context_recall",
    n_train: int | None = None,
    n_validation: int = 640,
    n_test: int = 1280,
    vocab_size: int | None = None,
    seq_len: int | None = None,
    frac_noise: float | None = None,
    noise_vocab_size: int | None = None,
    k_motif_size: int | None = None,
    v_motif_size: int | None = None,
    num_tokens_to_copy: int | None = None,
    seed: int = 0,
) -> dict[str, list[Row]]:
    """{"train"/"validation"/"test": [{"ids", "targets"}, ...]} for one kind; None = the kind's default
    (mad-lab's baseline: see each kind's function). Deterministic in `seed`."""
    knobs = kind_knobs(
        kind,
        vocab_size=vocab_size,
        seq_len=seq_len,
        frac_noise=frac_noise,
        noise_vocab_size=noise_vocab_size,
        k_motif_size=k_motif_size,
        v_motif_size=v_motif_size,
        num_tokens_to_copy=num_tokens_to_copy,
    )
    sizes = {
        "train": base_train(kind) if n_train is None else n_train,
        "validation": n_validation,
        "test": n_test,
    }
    for split, n in sizes.items():
        # an empty train or validation split is refused where every generator's is (load_splits); the
        # test split regenerated at another length (task.eval_lengths) asks for none
        if n < 0 or (split == "test" and n < 1):
            raise DataError(f"mad n_{split}={n} must be >= 1; set task.data.builtin.n_{split}=<rows>")
    if kind == "memorization":
        _check_even(knobs["seq_len"], kind, minimum=2)
        if knobs["vocab_size"] < 5:
            raise DataError(f"mad memorization vocab_size={knobs['vocab_size']} must be >= 5; set it to 256")
        knobs["kv_map"] = memorization_map(seed, knobs["vocab_size"])
    make = KINDS[kind]
    out = {}
    for index, (split, n) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, SEED_SALT, index])  # one stream per split
        out[split] = [make(rng, split != "train", **knobs) for _ in range(n)]
    return out


def kind_knobs(kind: str, **given: object) -> dict[str, object]:
    """The kind's knobs: its function's defaults, overridden by the `given` ones that are not None.
    A given knob the kind does not have is an error naming the kinds that have it."""
    if kind not in KINDS:
        raise DataError(
            f"mad kind '{kind}'{did_you_mean(kind, KINDS)} is unknown; set task.data.builtin.kind= one of "
            f"{', '.join(KINDS)}"
        )
    defaults = {
        p.name: p.default
        for p in inspect.signature(KINDS[kind]).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name != "kv_map"
    }
    for name, value in given.items():
        if value is None:
            continue
        if name not in defaults:
            having = [k for k, f in KINDS.items() if name in inspect.signature(f).parameters]
            raise DataError(
                f"mad kind {kind} has no knob {name} (it has {', '.join(defaults)}); {name} belongs to "
                f"{', '.join(having)}: leave task.data.builtin.{name}=null or choose one of those kinds"
            )
        defaults[name] = value
    return defaults


def sequence_length(kind: str, seq_len: int | None) -> int:
    """The longest row a kind generates at `seq_len` (None: the kind's mad-lab baseline), in tokens."""
    return int(kind_knobs(kind, seq_len=seq_len)["seq_len"])


def base_train(kind: str) -> int:
    return BASE_TRAIN.get(kind, BASE_TRAIN_DEFAULT)


def vocabulary(kind: str, vocab_size: int | None) -> int:
    """The number of token ids a kind's rows use (the model's vocabulary)."""
    return int(kind_knobs(kind, vocab_size=vocab_size)["vocab_size"])


# ---- helpers -------------------------------------------------------------------------------------
def _shifted(stream: list[int], asked: list[bool]) -> Row:
    """A next-token example from one stream: read stream[:-1]; position i outputs stream[i + 1] where
    that token is asked."""
    targets = [t if a else IGNORE for t, a in zip(stream[1:], asked[1:], strict=True)]
    return {"ids": list(stream[:-1]), "targets": targets}


def _check_even(seq_len: int, kind: str, *, minimum: int) -> None:
    if seq_len < minimum or seq_len % 2:
        raise DataError(
            f"mad {kind} seq_len={seq_len} must be even and >= {minimum} (it holds key-value pairs); "
            f"set task.data.builtin.seq_len={max(minimum, seq_len + seq_len % 2)}"
        )


def _check_noise(
    frac_noise: float, noise_vocab_size: int, vocab_size: int, kind: str, *, reserved: int
) -> None:
    if not 0 <= frac_noise < 1:
        raise DataError(
            f"mad {kind} frac_noise={frac_noise} must be in [0, 1); set task.data.builtin.frac_noise=0.2"
        )
    if noise_vocab_size < 0 or (frac_noise > 0 and noise_vocab_size == 0):
        raise DataError(
            f"mad {kind} noise_vocab_size={noise_vocab_size} must be > 0 when frac_noise > 0; "
            "set task.data.builtin.noise_vocab_size=16"
        )
    if (vocab_size - reserved - noise_vocab_size) // 2 < 1:
        raise DataError(
            f"mad {kind} vocab_size={vocab_size} leaves no key or value token beside {noise_vocab_size} noise "
            f"tokens; set task.data.builtin.vocab_size >= {noise_vocab_size + reserved + 2}"
        )

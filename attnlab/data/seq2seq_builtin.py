"""Synthetic offline sequence-to-sequence sets: a toy translation and a toy summarisation.

Both are deterministic in `seed` (which sentences) and built on a fixed artificial lexicon, so that a
tiny encoder-decoder learns them on a CPU in minutes while the trivial baselines (copy the source,
take the lead sentences) score low. Difficulty grows with length.

translation_builtin — rows {"source", "target"}. The source language is SVO with adjectives before
nouns ("ko mipa salu teru ko nilo", det adj noun verb det noun); clauses are joined by "e". The target
is the same sentence with (1) every word mapped through a fixed bilingual dictionary into a second
vocabulary with different letters, (2) adjectives moved after their noun, and (3) the verb moved to
the end of its clause (SOV), so the reordering spans the whole clause. Copying the source scores ~0 BLEU.
`nouns` sizes the lexicon (nouns; half as many adjectives and verbs): a larger one is more to learn, and
past what the task's BPE vocabulary holds as whole words, words reach the model in pieces. The defaults
(512 nouns, 4-24 words) keep the tiny default model well below BLEU 100 within the default budget, with
softmax and linear attention far apart (test BLEU 46.4 and 28.8); 256 nouns give `multihead` 91.1, 1024
give 7.2, and 16 nouns with 4-16 words (the first defaults) are solved perfectly (docs/measurements.md).

summarisation_builtin — rows {"document", "summary"}. A document is a run of sentences; a few are key
facts ("Kemo bought 7 lamps near the river last week .": a name, a verb, a number, an object, filler);
the rest are distractors that mention the same names and objects but no number. The summary lists
the facts in document order, compressed to "name verb number object .". Facts are placed anywhere, so
the lead sentences are a weak summary. The defaults (12-24 sentences, 2-6 facts) make the decoder
find each of up to six facts in order among a few hundred tokens: the tiny default model reaches
test ROUGE-L 92.5 with `multihead` and 56.6 with `linear` (lead-3: 15.6, first line 20.7); the
first defaults (4-8 sentences, 1-3 facts) were solved by every variant (ROUGE-L ~98;
docs/measurements.md).

With `role_rate` > 0 the document opens with its cast, `cast` people and their roles ("Kemo is the
baker ."), and that share of the facts names its person by role ("the baker bought 7 lamps ..."),
while the summary still names them ("Kemo bought 7 lamps ."): recall through a lookup that changes
from document to document (the MQAR gap, in text). Measured: too hard for the tiny default model,
whose names stay at chance with either variant (docs/measurements.md); a knob for larger models.
With `role_rate=0` (the default) no cast is written and nothing is drawn for it.
"""

from __future__ import annotations

import functools
import random

from attnlab.errors import DataError

# ---- a fixed artificial lexicon ------------------------------------------------------------------


def _words(
    rng: random.Random, n: int, consonants: str, vowels: str, syllables: int, taken: set[str]
) -> list[str]:
    out = []
    while len(out) < n:
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))
        if word not in taken:
            taken.add(word)
            out.append(word)
    return out


@functools.cache
def lexicon(nouns: int = 16) -> dict[str, list[tuple[str, str]]]:
    """(source, target) word pairs per part of speech: `nouns` nouns, half as many adjectives and verbs,
    3 determiners, 1 conjunction; the same in every run (its own fixed seed). Larger lexicons take
    longer words (more syllables) once two-syllable words run short."""
    rng, src_taken, tgt_taken = random.Random("attnlab-lexicon-v1"), set(), set()
    sizes = {"det": 3, "adj": max(1, nouns // 2), "noun": nouns, "verb": max(1, nouns // 2), "conj": 1}
    pairs = {}
    for pos, n in sizes.items():
        length = 1 if pos in ("det", "conj") else 2 if nouns <= 128 else 3  # (7 x 4)² = 784 2-syllable words
        src = _words(rng, n, "kmnpstl", "aiou", length, src_taken)
        tgt = _words(rng, n, "bdfgrvz", "ey", length + (0 if length == 1 else 1), tgt_taken)
        pairs[pos] = list(zip(src, tgt))
    return pairs


def translation_builtin(
    *,
    n_train: int = 5000,
    n_validation: int = 500,
    n_test: int = 500,
    min_words: int = 4,
    max_words: int = 24,
    adjective_rate: float = 0.5,
    nouns: int = 512,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """{"train"/"validation"/"test": [{"source": str, "target": str}, ...]}; lengths in source words;
    `nouns`: the lexicon's size (nouns; half as many adjectives and verbs)."""
    if not 4 <= min_words <= max_words:
        raise DataError(
            f"translation_builtin needs 4 <= min_words <= max_words (got {min_words}, {max_words}): a clause has at least 4 words"
        )
    if not 2 <= nouns <= 4096:
        raise DataError(
            f"translation_builtin needs 2 <= nouns <= 4096 (got {nouns}); set task.data.builtin.nouns=64"
        )
    rng, words = random.Random(f"translation-{seed}"), lexicon(nouns)
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    return {
        split: [_translation_pair(rng, words, min_words, max_words, adjective_rate) for _ in range(n)]
        for split, n in sizes.items()
    }


def _translation_pair(
    rng: random.Random,
    words: dict[str, list[tuple[str, str]]],
    min_words: int,
    max_words: int,
    adjective_rate: float,
) -> dict:
    while True:
        target_len = rng.randint(min_words, max_words)
        src: list[str] = []
        tgt: list[str] = []
        while len(src) < target_len:
            if src:
                conj = words["conj"][0]
                src.append(conj[0])
                tgt.append(conj[1])
            subject, obj = _noun_phrase(rng, words, adjective_rate), _noun_phrase(rng, words, adjective_rate)
            verb = rng.choice(words["verb"])
            src += [w for w, _ in subject] + [verb[0]] + [w for w, _ in obj]
            tgt += _target_np(subject) + _target_np(obj) + [verb[1]]
        if min_words <= len(src) <= max_words:
            return {"source": " ".join(src), "target": " ".join(tgt)}


def _noun_phrase(
    rng: random.Random, words: dict[str, list[tuple[str, str]]], adjective_rate: float
) -> list[tuple[str, str]]:
    phrase = [rng.choice(words["det"])]
    if rng.random() < adjective_rate:
        phrase.append(rng.choice(words["adj"]))
    phrase.append(rng.choice(words["noun"]))
    return phrase


def _target_np(phrase: list[tuple[str, str]]) -> list[str]:
    words = [t for _, t in phrase]
    return [words[0], words[2], words[1]] if len(words) == 3 else words  # det noun adj


# ---- summarisation --------------------------------------------------------------------------------

NAMES = ("Kemo", "Lisa", "Taro", "Mira", "Pavel", "Nadia", "Omar", "Sela", "Ivo", "Rena", "Bruno", "Hana")
FACT_VERBS = ("bought", "sold", "found", "built", "lost", "painted", "counted", "moved")
OBJECTS = ("lamps", "boats", "goats", "chairs", "books", "coins", "kites", "bells", "maps", "jars")
PLACES = (
    "near the river",
    "at the market",
    "in the old town",
    "by the harbour",
    "on the hill",
    "behind the school",
)
ROLES = (
    "baker",
    "smith",
    "farmer",
    "weaver",
    "potter",
    "miller",
    "tailor",
    "fisher",
    "guard",
    "teacher",
    "doctor",
    "singer",
)
TIMES = ("last week", "this morning", "on monday", "in the spring", "after the rain", "before noon")
DISTRACTORS = (
    "{name} was seen {place} {time} .",
    "the weather was mild {time} .",
    "people {place} talked about the {obj} .",
    "{name} said the {obj} looked old .",
    "nobody knew why {name} stayed {place} .",
    "{name} and {name2} walked {place} {time} .",
    "the {obj} {place} were painted red .",
    "it was quiet {place} {time} .",
)


def summarisation_builtin(
    *,
    n_train: int = 5000,
    n_validation: int = 500,
    n_test: int = 500,
    min_sentences: int = 12,
    max_sentences: int = 24,
    min_facts: int = 2,
    max_facts: int = 6,
    cast: int = 4,
    role_rate: float = 0.0,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """{"train"/"validation"/"test": [{"document": str, "summary": str}, ...]}; lengths in sentences
    (after the cast); `cast`: people introduced with a role at the start; `role_rate`: the share of
    facts that name their person by role (0: no cast, every fact by name, the first generator's rows)."""
    if not (1 <= min_facts <= max_facts and max_facts <= min_sentences <= max_sentences):
        raise DataError(
            f"summarisation_builtin needs 1 <= min_facts <= max_facts <= min_sentences <= max_sentences "
            f"(got {min_facts}, {max_facts}, {min_sentences}, {max_sentences}); e.g. task.data.builtin.min_sentences=4 "
            "task.data.builtin.max_sentences=8 task.data.builtin.min_facts=1 task.data.builtin.max_facts=3"
        )
    if not 0.0 <= role_rate <= 1.0:
        raise DataError(
            f"summarisation_builtin needs 0 <= role_rate <= 1 (got {role_rate}); set task.data.builtin.role_rate=1 (every fact by role) or 0 (none)"
        )
    if role_rate > 0 and not 1 <= cast <= len(ROLES):
        raise DataError(
            f"summarisation_builtin needs 1 <= cast <= {len(ROLES)} (got {cast}) when role_rate > 0; set task.data.builtin.cast=4, or role_rate=0 for no cast"
        )
    rng = random.Random(f"summarisation-{seed}")
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    shape = (min_sentences, max_sentences, min_facts, max_facts, cast if role_rate > 0 else 0, role_rate)
    return {split: [_document(rng, *shape) for _ in range(n)] for split, n in sizes.items()}


def _document(
    rng: random.Random,
    min_sentences: int,
    max_sentences: int,
    min_facts: int,
    max_facts: int,
    cast: int,
    role_rate: float,
) -> dict:
    # The cast (none when cast == 0, which draws nothing: with role_rate=0, the first generator's rows
    # at the same lengths).
    people = list(zip(rng.sample(NAMES, cast), rng.sample(ROLES, cast))) if cast else []
    sentences = [f"{name} is the {role} ." for name, role in people]
    summary = []
    n = rng.randint(min_sentences, max_sentences)
    fact_positions = set(rng.sample(range(n), rng.randint(min_facts, max_facts)))
    for i in range(n):
        name, name2 = rng.sample(NAMES, 2)
        obj, place, time = rng.choice(OBJECTS), rng.choice(PLACES), rng.choice(TIMES)
        if i in fact_positions:
            said_as = name
            if people and rng.random() < role_rate:
                name, role = rng.choice(people)
                said_as = f"the {role}"
            verb, number = rng.choice(FACT_VERBS), rng.randint(2, 9)
            tail = rng.choice((f"{place} {time}", place, time))
            sentences.append(f"{said_as} {verb} {number} {obj} {tail} .")
            summary.append(f"{name} {verb} {number} {obj} .")
        else:
            if people:  # distractors mention the cast, by name and by role, without a number
                person, role = rng.choice(people)
                name = rng.choice((person, f"the {role}"))
                name2 = name2 if name2 != person else rng.choice([n for n in NAMES if n != person])
            template = rng.choice(DISTRACTORS)
            sentences.append(template.format(name=name, name2=name2, obj=obj, place=place, time=time))
    return {"document": " ".join(sentences), "summary": " ".join(summary)}

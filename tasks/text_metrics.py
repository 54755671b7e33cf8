"""Corpus metrics for generated text: BLEU and chrF (sacrebleu), ROUGE-1/2/L (rouge_score).

All scores are on a 0-100 scale, computed on detokenised strings exactly as the reference
implementations do, so they can be compared with published numbers on the same data:

    bleu(hyps, refs)   == sacrebleu.corpus_bleu(hyps, [refs]).score
    chrf(hyps, refs)   == sacrebleu.corpus_chrf(hyps, [refs]).score
    rouge(hyps, refs)  == mean over pairs of RougeScorer([...], use_stemmer=True).score(ref, hyp)[k].fmeasure * 100
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _check(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references; they must pair up")


def bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, exponential smoothing), 0-100."""
    import sacrebleu

    _check(hyps, refs)
    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score) if hyps else 0.0


def chrf(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus chrF (character n-gram F-score, beta=2), 0-100."""
    import sacrebleu

    _check(hyps, refs)
    return float(sacrebleu.corpus_chrf(list(hyps), [list(refs)]).score) if hyps else 0.0


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """{"rouge1", "rouge2", "rougeL"}: F-measure x 100, averaged over the pairs."""
    _check(hyps, refs)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hyps, refs):
        scores = _scorer().score(ref, hyp)  # rouge_score's order: (target, prediction)
        for key in ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    n = max(1, len(hyps))
    return {key: 100.0 * total / n for key, total in totals.items()}


def translation_metrics(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    return {"bleu": bleu(hyps, refs), "chrf": chrf(hyps, refs)}


def summarisation_metrics(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    return rouge(hyps, refs)

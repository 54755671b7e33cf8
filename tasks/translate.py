"""Translation: encoder-decoder, BLEU and chrF (sacrebleu); baseline: copy the source.

Default data: the built-in toy translation (attnlab.data.translation_builtin: a dictionary mapping
plus clause-level reordering, so copying the source scores ~0 BLEU).
"""

from __future__ import annotations

from attnlab.data import copy_baseline, translation_builtin
from attnlab.tasks.seq2seq import Seq2SeqDataModule, Seq2SeqTask
from attnlab.tasks.text_metrics import translation_metrics


class TranslateDataModule(Seq2SeqDataModule):
    """Rows {source, target} (remap with task.data.columns.source/target, e.g. translation.de)."""

    SOURCE, TARGET = "source", "target"
    builtin = staticmethod(translation_builtin)

    def baseline(self, rows: list[dict]) -> list[str]:
        return copy_baseline(rows, column=self.SOURCE)


class TranslateTask(Seq2SeqTask):
    """Logs val/bleu, val/chrf (on task.decode.val_samples rows), test/bleu, test/chrf, test/baseline_*."""

    METRICS = ("loss", "bleu", "chrf")

    def score(self, hyps: list[str], refs: list[str]) -> dict[str, float]:
        return translation_metrics(hyps, refs)

"""Summarisation: encoder-decoder, ROUGE-1/2/L (rouge_score, F-measure x 100); baselines: lead-3
(test/baseline_rouge*) and the document's first line (test/baseline_first_line_rouge*).

Default data: the built-in toy summarisation (attnlab.data.summarisation_builtin: key facts scattered
among distractor sentences; the summary lists the facts compressed, so lead-3 is a weak summary).
"""

from __future__ import annotations

from attnlab.data import first_line_baseline, lead_baseline, summarisation_builtin
from attnlab.tasks.seq2seq import Seq2SeqDataModule, Seq2SeqTask
from attnlab.tasks.text_metrics import summarisation_metrics

LEAD_SENTENCES = 3


class SummariseDataModule(Seq2SeqDataModule):
    """Rows {document, summary} (remap with task.data.columns.document/summary, e.g. article/highlights)."""

    SOURCE, TARGET = "document", "summary"
    builtin = staticmethod(summarisation_builtin)

    def baseline(self, rows: list[dict]) -> list[str]:
        return lead_baseline(rows, LEAD_SENTENCES, column=self.SOURCE)

    def other_baselines(self, rows: list[dict]) -> dict[str, list[str]]:
        return {"first_line": first_line_baseline(rows, column=self.SOURCE)}


class SummariseTask(Seq2SeqTask):
    """Logs val/rougeL (…1/2) on task.decode.val_samples rows, test/rouge1/2/L and test/baseline_rouge*."""

    METRICS = ("loss", "rouge1", "rouge2", "rougeL")

    def score(self, hyps: list[str], refs: list[str]) -> dict[str, float]:
        return summarisation_metrics(hyps, refs)

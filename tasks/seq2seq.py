"""Sequence-to-sequence shared by translate and summarise: data module, task base, sample logging.

Rows {<source column>, <target column>} -> batches

    src (B, N), src_padding_mask (B, N)        the source, no special tokens
    tgt_in (B, T), tgt_padding_mask (B, T)     [bos] target...       (teacher forcing input)
    tgt_out (B, T)                             target... [eos]       (labels; padding = pad_id, ignored)
    index (B,)                                 row numbers in the split (references, samples)

Training is teacher-forced cross entropy with label smoothing; validation adds a generation metric
on the first `task.decode.val_samples` rows (greedy by default, cheap); test decodes every test row
with `task.decode.beam`, scores the trivial baseline on the same rows, writes the samples to
<run_dir>/samples_test.jsonl (and a wandb table when a WandbLogger is attached), and times the
decoding (results.json cost.decode_tokens_per_s, cost.decode_sentences_per_s, cost.decode_beam).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import WandbLogger

from attnlab.data import SPLITS, build_tokenizer, encode_texts, load_splits, pad_batch
from attnlab.errors import ConfigError, DataError, did_you_mean
from attnlab.nn import AttentionSpec, EncoderDecoder, ModelConfig
from attnlab.tasks.common import AttnlabTask, EncodedDataModule
from attnlab.tasks.generation import DecodeConfig, generate

log = logging.getLogger(__name__)
SAMPLES_FILE = "samples_{stage}.jsonl"


class Seq2SeqDataModule(EncodedDataModule):
    """Subclasses set the logical column names, the built-in generator and the trivial baseline."""

    SOURCE: ClassVar[str] = "source"
    TARGET: ClassVar[str] = "target"
    builtin: ClassVar[Callable[..., dict[str, list[dict]]] | None] = None

    def __init__(self, data: Mapping, *, max_len: int, cache_dir: str | None = None):
        super().__init__()
        self.data, self.max_len, self.cache_dir = data, int(max_len), cache_dir
        self.batch_size = int(data["batch_size"])
        self.shared_tokenizer = bool(data.get("shared_tokenizer", True))
        self.source_tokenizer = self.target_tokenizer = None
        self.rows: dict[str, list[dict]] = {}
        self.encoded: dict[str, list[tuple[list[int], list[int], int]]] = {}

    # ---- the trivial baseline of the task, scored on the test set -----------------------------------
    def baseline(self, rows: list[dict]) -> list[str]:
        raise NotImplementedError

    def other_baselines(self, rows: list[dict]) -> dict[str, list[str]]:
        """More trivial predictions scored beside `baseline`, logged as test/baseline_<name>_<metric>."""
        return {}

    def setup(self, stage: str | None = None) -> None:
        if self.encoded:
            return
        columns = dict(self.data.get("columns") or {self.SOURCE: self.SOURCE, self.TARGET: self.TARGET})
        unknown = set(columns) - {self.SOURCE, self.TARGET}
        if unknown or len(columns) != 2:
            raise ConfigError(
                f"task.data.columns must map exactly {self.SOURCE} and {self.TARGET} (got {sorted(columns)}); "
                f"e.g. task.data.columns.{self.SOURCE}=<column> task.data.columns.{self.TARGET}=<column>"
            )
        rows = load_splits(self.data, columns=columns, builtin=type(self).builtin, cache_dir=self.cache_dir)
        for split, split_rows in rows.items():
            for i, row in enumerate(split_rows):
                for key in (self.SOURCE, self.TARGET):
                    if not isinstance(row[key], str) or not row[key].strip():
                        raise DataError(
                            f"row {i} of the {split} split has an empty or non-text '{key}' ({row[key]!r}); "
                            f"clean the data or remap task.data.columns.{key}=<text column>"
                        )
        self.rows = rows
        kind, vocab = self.data.get("tokenizer", "bytes"), int(self.data.get("vocab_size", 8000))
        train_src = [r[self.SOURCE] for r in rows["train"]]
        train_tgt = [r[self.TARGET] for r in rows["train"]]
        if self.shared_tokenizer:
            tok = build_tokenizer(
                kind, train_texts=train_src + train_tgt, vocab_size=vocab, cache_dir=self.cache_dir
            )
            self.source_tokenizer = self.target_tokenizer = tok
        else:
            self.source_tokenizer = build_tokenizer(
                kind, train_texts=train_src, vocab_size=vocab, cache_dir=self.cache_dir
            )
            self.target_tokenizer = build_tokenizer(
                kind, train_texts=train_tgt, vocab_size=vocab, cache_dir=self.cache_dir
            )
        for split in SPLITS:
            src, _ = encode_texts(
                [r[self.SOURCE] for r in rows[split]],
                self.source_tokenizer,
                self.max_len,
                what=f"{split} {self.SOURCE}",
            )
            # [bos] target [eos]: the decoder reads all but the last token and predicts all but the first.
            tgt, _ = encode_texts(
                [r[self.TARGET] for r in rows[split]],
                self.target_tokenizer,
                self.max_len + 1,
                add_bos=True,
                add_eos=True,
                what=f"{split} {self.TARGET}",
            )
            self.encoded[split] = [(s, t, i) for i, (s, t) in enumerate(zip(src, tgt))]
        log.info(
            "%s data: %s; tokenizers: %s (%s)", type(self).__name__,
            ", ".join(f"{s}={len(v)}" for s, v in self.encoded.items()),
            "shared" if self.shared_tokenizer else "separate", self.source_tokenizer,
        )  # fmt: skip

    @property
    def source_vocab_size(self) -> int:
        return self.source_tokenizer.vocab_size

    @property
    def target_vocab_size(self) -> int:
        return self.target_tokenizer.vocab_size

    def collate(self, items: list[tuple[list[int], list[int], int]]) -> dict[str, torch.Tensor]:
        src, src_mask = pad_batch([s for s, _, _ in items], self.source_tokenizer.pad_id)  # (B, N)
        tgt_in, tgt_mask = pad_batch([t[:-1] for _, t, _ in items], self.target_tokenizer.pad_id)  # (B, T)
        tgt_out, _ = pad_batch([t[1:] for _, t, _ in items], self.target_tokenizer.pad_id)  # (B, T)
        return {
            "src": src, "src_padding_mask": src_mask, "tgt_in": tgt_in, "tgt_padding_mask": tgt_mask,
            "tgt_out": tgt_out, "index": torch.tensor([i for _, _, i in items]),
        }  # fmt: skip


class Seq2SeqTask(AttnlabTask):
    """Encoder-decoder over any attention variant; subclasses name the metrics and the baseline."""

    PADDING_MASKS = ("src_padding_mask", "tgt_padding_mask")

    def __init__(
        self,
        *,
        vocab_size: int,
        target_vocab_size: int,
        model: Mapping,
        attention: Mapping,
        decode: Mapping,
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
        label_smoothing: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
    ):
        super().__init__(lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
        self.save_hyperparameters()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"task.module.label_smoothing={label_smoothing} must be in [0, 1)")
        self.decode = check_decode(decode)
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.label_smoothing = label_smoothing
        spec = AttentionSpec.from_config(attention)
        self.model = EncoderDecoder(
            vocab_size, ModelConfig.from_config(model), spec, target_vocab_size=target_vocab_size
        )
        cap = int(dict(model)["max_len"]) - 1  # the decoder's positional table, BOS included
        if self.decode["max_new_tokens"] > cap:
            log.info("task.decode.max_new_tokens=%d: generation stops at %d tokens (model.max_len - 1)",
                     self.decode["max_new_tokens"], cap)  # fmt: skip
        self._outputs: dict[str, dict[int, str]] = {"val": {}, "test": {}}
        self._decode_speed = DecodeSpeed()

    @classmethod
    def from_datamodule(
        cls, *, datamodule: Seq2SeqDataModule, model: Mapping, attention: Mapping, **hparams: Any
    ):
        from omegaconf import OmegaConf

        def as_dict(c):
            return OmegaConf.to_container(c, resolve=True) if OmegaConf.is_config(c) else dict(c)

        if "decode" in hparams:
            hparams["decode"] = as_dict(hparams["decode"])
        tok = datamodule.target_tokenizer
        return cls(
            vocab_size=datamodule.source_vocab_size, target_vocab_size=datamodule.target_vocab_size,
            model=as_dict(model), attention=as_dict(attention), pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id,
            **hparams,
        )  # fmt: skip

    # ---- subclasses ----------------------------------------------------------------------------------
    def score(self, hyps: list[str], refs: list[str]) -> dict[str, float]:
        raise NotImplementedError

    # ---- training ------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["src"], batch["src_padding_mask"], batch["tgt_in"])  # (B, T, V)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self(batch)  # (B, T, V)
        return F.cross_entropy(
            logits.flatten(0, 1),
            batch["tgt_out"].flatten(),
            ignore_index=self.pad_id,
            label_smoothing=self.label_smoothing,
        )

    def shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """The loss; in evaluation also the generations that on_*_epoch_end scores (val: a sample)."""
        loss = self.compute_loss(batch)
        rows = batch["src"].shape[0]
        if stage == "train":  # every step's loss on the progress bar; no epoch mean
            self.log("train/loss", loss, prog_bar=True, batch_size=rows, on_step=True, on_epoch=False)
            return loss
        self.log(
            f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=rows, on_step=False, on_epoch=True
        )
        if stage == "val":
            self._generate_batch(batch, stage, int(self.decode["val_samples"]), int(self.decode["val_beam"]))
        else:
            cap = self.decode.get("test_samples")
            self._generate_batch(batch, stage, None if cap is None else int(cap), int(self.decode["beam"]))
        return loss

    # ---- generation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(
        self, src: torch.Tensor, src_padding_mask: torch.Tensor, *, beam: int | None = None
    ) -> list[list[int]]:
        """Token ids (no BOS/EOS) of the generations for a source batch, with the task's decode settings."""
        memory = self.model.encoder(src, src_padding_mask)  # (B, N, C)
        return generate(
            self.model.decoder, memory, src_padding_mask, bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id,
            max_new_tokens=int(self.decode["max_new_tokens"]), beam=int(beam or self.decode["beam"]),
            length_penalty=float(self.decode["length_penalty"]),
        )  # fmt: skip

    def _generate_batch(
        self, batch: dict[str, torch.Tensor], stage: str, limit: int | None, beam: int
    ) -> None:
        done = self._outputs[stage]
        keep = batch["index"].tolist()
        if limit is not None:
            keep = [i for i in keep if i < limit]
        if not keep:
            return
        rows = torch.tensor([batch["index"].tolist().index(i) for i in keep], device=batch["src"].device)
        src, mask = batch["src"].index_select(0, rows), batch["src_padding_mask"].index_select(0, rows)
        src = src[:, : int((~mask).sum(1).max())]  # drop columns that are padding in every kept row
        mask = mask[:, : src.shape[1]]
        tok = self.trainer.datamodule.target_tokenizer
        if src.is_cuda:  # the clock starts when the queued work (this batch's loss) is done
            torch.cuda.synchronize(src.device)
        start = time.perf_counter()
        generated = self.generate_ids(src, mask, beam=beam)  # lists: the device has finished
        if stage == "test":
            self._decode_speed.add(time.perf_counter() - start, generated)
        for i, ids in zip(keep, generated):
            done[i] = tok.decode(ids)

    def on_validation_epoch_start(self) -> None:
        self._outputs["val"] = {}

    def on_test_epoch_start(self) -> None:
        self._outputs["test"] = {}
        self._decode_speed = DecodeSpeed()

    def test_cost(self) -> dict[str, Any]:
        """Test-time decoding speed (cost.decode_*): see DecodeSpeed."""
        return self._decode_speed.summary(int(self.decode["beam"]))

    def _references(self, split: str, indices: list[int]) -> tuple[list[dict], list[str]]:
        dm = self.trainer.datamodule
        rows = [dm.rows[split][i] for i in indices]
        return rows, [r[dm.TARGET] for r in rows]

    def on_validation_epoch_end(self) -> None:
        outputs = self._outputs["val"]
        if not outputs:
            return
        indices = sorted(outputs)
        _, refs = self._references("validation", indices)
        scores = self.score([outputs[i] for i in indices], refs)
        self.log_dict({f"val/{k}": v for k, v in scores.items()}, prog_bar=True, batch_size=len(indices))

    def on_test_epoch_end(self) -> None:
        outputs = self._outputs["test"]
        if not outputs:
            return
        dm = self.trainer.datamodule
        indices = sorted(outputs)
        rows, refs = self._references("test", indices)
        hyps = [outputs[i] for i in indices]
        scores = {f"test/{k}": v for k, v in self.score(hyps, refs).items()}
        baseline = dm.baseline(rows)
        scores |= {f"test/baseline_{k}": v for k, v in self.score(baseline, refs).items()}
        for name, predictions in dm.other_baselines(rows).items():
            scores |= {f"test/baseline_{name}_{k}": v for k, v in self.score(predictions, refs).items()}
        self.log_dict(scores, batch_size=len(indices))
        samples = [
            {"index": i, "source": r[dm.SOURCE], "reference": ref, "output": hyp, "baseline": base}
            for i, r, ref, hyp, base in zip(indices, rows, refs, hyps, baseline)
        ]
        self.write_samples(samples, "test")
        log.info(
            "test: %s (baseline %s) on %d samples",
            ", ".join(f"{k.split('/')[1]}={v:.2f}" for k, v in scores.items() if "baseline" not in k),
            ", ".join(f"{k.split('_', 1)[1]}={v:.2f}" for k, v in scores.items() if "baseline" in k), len(indices),
        )  # fmt: skip

    def write_samples(self, samples: list[dict], stage: str) -> Path | None:
        """All samples to <run_dir>/samples_<stage>.jsonl; the first decode.table_rows to a wandb table."""
        if self.trainer.is_global_zero:
            root = Path(self.trainer.default_root_dir)
            root.mkdir(parents=True, exist_ok=True)
            path = root / SAMPLES_FILE.format(stage=stage)
            with open(path, "w", encoding="utf-8") as handle:
                for sample in samples:
                    handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
            log.info("wrote %d %s samples to %s", len(samples), stage, path)
        else:
            path = None
        table = samples[: int(self.decode.get("table_rows", 50))]
        columns = ["source", "reference", "output"]
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(
                    key=f"samples/{stage}", columns=columns, data=[[s[c] for c in columns] for s in table]
                )
        return path


@dataclass
class DecodeSpeed:
    """How fast the test stage decoded: wall seconds of encoder + search (greedy or beam) per batch,
    summed, with the sentences and output tokens (of the returned hypotheses, EOS excluded) they gave.
    Loss computation, detokenisation and scoring are not counted."""

    seconds: float = 0.0
    sentences: int = 0
    tokens: int = 0

    def add(self, seconds: float, generated: list[list[int]]) -> None:
        self.seconds += seconds
        self.sentences += len(generated)
        self.tokens += sum(len(ids) for ids in generated)

    def summary(self, beam: int) -> dict[str, Any]:
        """results.json cost figures; none when nothing was decoded (e.g. no test rows)."""
        if not self.sentences or self.seconds <= 0:
            return {}
        return {
            "decode_tokens_per_s": self.tokens / self.seconds,
            "decode_sentences_per_s": self.sentences / self.seconds,
            "decode_seconds": self.seconds,
            "decode_beam": beam,
        }


def check_decode(decode: Mapping) -> dict[str, Any]:
    """`task.decode` over DecodeConfig's defaults, with its ranges checked."""
    decode = dict(decode)
    allowed = [f.name for f in fields(DecodeConfig)]
    unknown = sorted(set(decode) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown task.decode key(s) {unknown}{did_you_mean(unknown[0], allowed)}; allowed: {allowed}"
        )
    decode = asdict(DecodeConfig(**decode))
    for key in ("beam", "max_new_tokens", "val_samples", "val_beam"):
        if not isinstance(decode[key], int) or isinstance(decode[key], bool) or decode[key] < 1:
            raise ConfigError(f"task.decode.{key}={decode[key]!r} must be a positive integer")
    if decode["test_samples"] is not None and int(decode["test_samples"]) < 1:
        raise ConfigError(
            f"task.decode.test_samples={decode['test_samples']} must be a positive integer or null (all)"
        )
    return decode

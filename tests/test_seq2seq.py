"""translate and summarise end to end through attnlab.run.train.run, plus their metrics and data sources."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import sacrebleu
from hydra import compose, initialize_config_module
from rouge_score import rouge_scorer

from attnlab import available_attentions, get_attention_class
from attnlab.config.schemas import store_configs
from attnlab.errors import CapabilityError, ConfigError
from attnlab.run.train import run
from attnlab.tasks import text_metrics

CAUSAL = [n for n in available_attentions() if get_attention_class(n).capabilities.causal]
TASKS = {
    "translate": ["task.data.builtin.n_train=48", "task.data.builtin.n_validation=8", "task.data.builtin.n_test=8",
                  "task.data.builtin.max_words=8"],
    "summarise": ["task.data.builtin.n_train=48", "task.data.builtin.n_validation=8", "task.data.builtin.n_test=8",
                  "task.data.builtin.min_sentences=2", "task.data.builtin.max_sentences=5", "task.data.builtin.max_facts=2"],
}  # fmt: skip
SMALL = ["model.d_model=32", "model.heads=2", "model.encoder_layers=1", "model.decoder_layers=1", "model.max_len=128",
         "task.data.batch_size=8", "task.decode.max_new_tokens=8", "task.decode.beam=2", "task.decode.val_samples=4",
         "task.data.tokenizer=bytes"]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


def make_cfg(tmp_path: Path, overrides: list[str]):
    store_configs()
    with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
        return compose(
            config_name="config",
            overrides=["trainer=debug", "logger=none", f"paths.run_dir={tmp_path / 'run'}",
                       f"paths.data_cache={tmp_path / 'cache'}", *overrides],
        )  # fmt: skip


def variant_overrides(name: str) -> list[str]:
    """`local` has no cross attention: its decoder reads the encoder through multihead."""
    extra = (
        [] if get_attention_class(name).capabilities.cross else ["model.decoder.cross_attention=multihead"]
    )
    return [f"attention={name}", *extra]


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("name", CAUSAL)
def test_fast_dev_run(tmp_path, task, name):
    cfg = make_cfg(tmp_path, [f"task={task}", *variant_overrides(name), *TASKS[task], *SMALL])
    results = run(cfg)
    metrics = results["metrics"]
    keys = (
        ("test/bleu", "test/chrf", "test/baseline_bleu")
        if task == "translate"
        else ("test/rouge1", "test/rouge2", "test/rougeL", "test/baseline_rougeL")
    )
    for key in (*keys, "test/loss"):
        assert key in metrics, f"{key} missing from {sorted(metrics)}"
    samples = [
        json.loads(line) for line in (tmp_path / "run" / "samples_test.jsonl").read_text().splitlines()
    ]
    assert len(samples) == 8 and {"source", "reference", "output"} <= samples[0].keys()
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    # test-time decoding speed, beside the training cost: 8 test sentences with beam 2
    cost = written["cost"]
    assert cost["decode_beam"] == 2 and cost["decode_seconds"] > 0, cost
    assert cost["decode_sentences_per_s"] == pytest.approx(8 / cost["decode_seconds"])
    output_tokens = sum(len(s["output"]) for s in samples)  # bytes tokenizer: >= one token per character
    assert round(cost["decode_tokens_per_s"] * cost["decode_seconds"]) >= output_tokens


def test_separate_tokenizers_and_bpe(tmp_path):
    cfg = make_cfg(tmp_path, ["task=translate", *TASKS["translate"], *SMALL, "task.data.tokenizer=bpe",
                              "task.data.vocab_size=300", "task.data.shared_tokenizer=false"])  # fmt: skip
    results = run(cfg)
    model = results["config"]["model"]
    assert model["max_len"] == 128 and "test/bleu" in results["metrics"]
    assert len(list((tmp_path / "cache").glob("bpe-300-*.json"))) == 2  # one per side


def test_runs_that_train_the_same_bpe_at_once_both_cache_it(tmp_path):
    """Parallel runs (a study's cells, two presets side by side) train the same tokenizer at the same
    moment: each writes its own temporary file before the atomic rename (one shared temporary name
    made the second rename fail with FileNotFoundError, and that run died before training)."""
    import multiprocessing

    from attnlab.data import tokenizers

    context = multiprocessing.get_context("fork")
    barrier, outcomes = context.Barrier(2), context.Queue()
    train = tokenizers._train_bpe

    def build() -> None:
        def trained_in_step(*args, **kwargs):
            tokenizer = train(*args, **kwargs)
            barrier.wait(timeout=60)  # both processes save and rename at the same moment
            return tokenizer

        tokenizers._train_bpe = trained_in_step
        try:
            texts = [f"message {i} of the same corpus" for i in range(200)]
            tokenizers.build_tokenizer("bpe", train_texts=texts, vocab_size=300, cache_dir=tmp_path)
            outcomes.put("built")
        except Exception as err:  # reported to the parent, which asserts
            outcomes.put(repr(err))

    processes = [context.Process(target=build) for _ in range(2)]
    for process in processes:
        process.start()
    results = [outcomes.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert results == ["built", "built"]
    assert [path.suffix for path in tmp_path.iterdir()] == [".json"]  # the cache, no temporary left


def test_files_source_with_remapped_columns(tmp_path):
    rows = [{"article": f"word{i} alpha . beta{i % 3} gamma . delta .", "highlights": f"word{i} beta{i % 3} ."}
            for i in range(40)]  # fmt: skip
    for split, part in (("train", rows[:24]), ("validation", rows[24:32]), ("test", rows[32:])):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    cfg = make_cfg(tmp_path, [
        "task=summarise", "task.data.source=files", *(f"task.data.{s}={tmp_path / s}.jsonl" for s in ("train", "validation", "test")),
        "task.data.columns.document=article", "task.data.columns.summary=highlights", *SMALL,
    ])  # fmt: skip
    results = run(cfg)
    assert {"test/rougeL", "test/baseline_rougeL"} <= results["metrics"].keys()
    first = json.loads((tmp_path / "run" / "samples_test.jsonl").read_text().splitlines()[0])
    assert first["source"] == rows[32]["article"] and first["reference"] == rows[32]["highlights"]
    assert first["baseline"] == "word32 alpha . beta2 gamma . delta ."  # lead-3


def test_files_source_translate(tmp_path):
    pairs = [{"source": f"ka {i} mo", "target": f"be {i} de"} for i in range(30)]
    (tmp_path / "all.jsonl").write_text(
        "".join(json.dumps(p | {"split": "train" if i < 20 else "test"}) + "\n" for i, p in enumerate(pairs))
    )
    cfg = make_cfg(tmp_path, ["task=translate", "task.data.source=files", f"task.data.path={tmp_path / 'all.jsonl'}", *SMALL,
                              "trainer.fast_dev_run=false", "trainer.max_steps=2", "trainer.val_check_interval=1",
                              "trainer.limit_val_batches=1", "logger=csv"])  # fmt: skip
    results = run(cfg)
    header = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/bleu", "val/chrf", "val/loss"} <= set(header)  # the monitored generation metric
    assert results["best_checkpoint"]
    assert results["metrics"]["test/baseline_bleu"] == pytest.approx(text_metrics.bleu(
        [p["source"] for p in pairs[20:]], [p["target"] for p in pairs[20:]]), abs=1e-4)  # fmt: skip


def test_non_causal_decoder_is_a_clear_error(tmp_path):
    cfg = make_cfg(tmp_path, ["task=translate", "attention=lowrank", *TASKS["translate"], *SMALL])
    with pytest.raises(CapabilityError, match=r"set model\.decoder\.self_attention=") as info:
        run(cfg)
    assert "lowrank" in str(info.value) and "causal" in str(info.value)


def test_non_causal_encoder_with_causal_decoder_runs(tmp_path):
    cfg = make_cfg(tmp_path, ["task=translate", "attention=nystrom", "model.decoder.self_attention=linear",
                              *TASKS["translate"], *SMALL])  # fmt: skip
    assert "test/bleu" in run(cfg)["metrics"]


def test_bad_decode_settings_are_config_errors(tmp_path):
    cfg = make_cfg(tmp_path, ["task=translate", *TASKS["translate"], *SMALL, "task.decode.beam=0"])
    with pytest.raises(ConfigError, match="task.decode.beam"):
        run(cfg)


# ---- metrics agree with the reference implementations ----------------------------------------------------
HYPS = ["the cat sat on the mat", "a quick brown fox jumps", "hello there world", ""]
REFS = ["the cat is on the mat", "the quick brown fox jumped over", "hello world", "nothing here"]


def test_bleu_and_chrf_match_sacrebleu():
    assert text_metrics.bleu(HYPS, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert text_metrics.chrf(HYPS, REFS) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert text_metrics.bleu(REFS, REFS) == pytest.approx(100.0)
    assert 0.0 < text_metrics.bleu(HYPS, REFS) < 100.0


def test_rouge_matches_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = {k: 0.0 for k in ("rouge1", "rouge2", "rougeL")}
    for hyp, ref in zip(HYPS, REFS):
        scores = scorer.score(ref, hyp)
        for k in expected:
            expected[k] += 100 * scores[k].fmeasure / len(HYPS)
    got = text_metrics.rouge(HYPS, REFS)
    assert got == pytest.approx(expected)
    assert text_metrics.rouge(["a b c"], ["a b c"])["rougeL"] == pytest.approx(100.0)


def test_metrics_refuse_unpaired_lists():
    with pytest.raises(ValueError, match="pair up"):
        text_metrics.bleu(["a"], ["a", "b"])


def test_samples_go_to_a_wandb_table(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    from attnlab.tasks.translate import TranslateTask

    logged = {}
    monkeypatch.setattr(
        WandbLogger,
        "log_table",
        lambda self, key, columns, data: logged.update(key=key, columns=columns, data=data),
    )
    task = TranslateTask(vocab_size=10, target_vocab_size=10, model={"d_model": 16, "heads": 2, "max_len": 16},
                         attention={"name": "multihead"}, decode={"table_rows": 2})  # fmt: skip
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    task.trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(tmp_path), loggers=[logger])
    samples = [
        {"index": i, "source": f"s{i}", "reference": f"r{i}", "output": f"o{i}", "baseline": f"s{i}"}
        for i in range(3)
    ]
    path = task.write_samples(samples, "test")
    assert len(path.read_text().splitlines()) == 3
    assert logged == {
        "key": "samples/test",
        "columns": ["source", "reference", "output"],
        "data": [["s0", "r0", "o0"], ["s1", "r1", "o1"]],
    }

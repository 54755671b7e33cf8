"""The bad-input catalogue, as data: one row per mistake a user can make, and what the one-line
`error:` must say. tests/test_bad_inputs.py runs every row (in-process; a few also as real
subprocesses) and checks: exit status 2, one line starting `error: `, no traceback, the fragment,
and nothing trained or measured (no results.json, checkpoint or bench.csv).

Add a row for every new mistake found; keep the fragment to the words that carry the fix.

    Bad(args, fragment, what)
      args      the command line after `python -m attnlab` (what="app"), `python -m attnlab.bench`
                ("bench"), `python -m attnlab.report` ("report"), `python -m attnlab.variants`
                ("variants") or `python -m attnlab.study` ("study", after out={tmp}/study), split
                like a shell (shlex).
                `{tmp}` is the test's temporary directory; a word `@name` is replaced by the words the
                setup `name` returns (tests/test_bad_inputs.py: data files, checkpoints, results).
      fragment  words the one-line message must contain.
      cpu_only  the mistake exists only where no CUDA GPU is visible (fp16 on CPU, trainer=gpu).

App rows run with a tiny model, `trainer=debug` and `logger=none` prepended (tests/test_bad_inputs.py
FAST), so any row that is accepted by mistake trains for one batch only. Bench rows run with a tiny
sweep on the CPU (BENCH_TINY) prepended.
"""

from __future__ import annotations

from typing import NamedTuple


class Bad(NamedTuple):
    args: str
    fragment: str
    what: str = "app"
    cpu_only: bool = False


APP = [
    # ---- attention: names, parameters, types, declared ranges (the registry) ----------------------
    Bad("attention=lineer", "did you mean 'linear'"),
    Bad("model.decoder.self_attention=multihed", "unknown attention 'multihed'"),
    Bad("attention=linear attention.feture_map=relu", "did you mean 'feature_map'"),
    Bad("attention=linear attention.k=8", "its parameters: feature_map"),
    Bad("attention=linear attention.eps=abc", "expected float"),
    Bad("attention=linear attention.feature_map=rellu", "did you mean 'relu'"),
    Bad("attention=linear attention.feature_map=null", "expected str, got None"),
    Bad("attention=local attention.window=0", "attention.window=0 must be >= 1; e.g. attention.window=128"),
    Bad("attention=local attention.window=-5", "attention.window=-5 must be >= 1"),
    Bad("attention=local attention.window=1.5", "expected int, got float"),
    Bad("attention=local attention.window=true", "expected int, got bool"),
    Bad("attention=performer attention.features=-1", "attention.features=-1 must be >= 1"),
    Bad("attention=performer attention.features=0", "attention.features=0 must be >= 1"),
    Bad(
        "attention=performer attention.features=1000000",
        "attention.features=1000000 must be <= 4 x model.max_len",
    ),
    Bad("attention=performer attention.chunk_size=0", "attention.chunk_size=0 must be >= 1"),
    Bad("attention=performer attention.redraw=maybe", "expected bool"),
    Bad("attention=performer attention.seed=abc", "expected int"),
    Bad("attention=nystrom attention.landmarks=0", "attention.landmarks=0 must be >= 1"),
    Bad(
        "attention=nystrom attention.landmarks=1000", "attention.landmarks=1000 must be <= model.max_len=128"
    ),
    Bad("attention=nystrom attention.pinv_iterations=0", "attention.pinv_iterations=0 must be >= 1"),
    Bad(
        "attention=nystrom attention.conv_kernel=4",
        "must be odd and >= 1 (or 0); e.g. attention.conv_kernel=5",
    ),
    Bad("attention=nystrom attention.conv_kernel=-1", "attention.conv_kernel=-1 must be odd"),
    Bad("attention=linear attention.eps=-1", "attention.eps=-1.0 must be > 0"),
    Bad("attention=linear attention.eps=0", "attention.eps=0.0 must be > 0"),
    Bad("attention=linear attention.eps=nan", "expected a finite number"),
    Bad("attention=linear attention.eps=inf", "expected a finite number"),
    Bad("attention.eps=-1", "attention 'multihead' has no parameter 'eps'"),
    Bad("attention=linear attention.chunk_size=0", "attention.chunk_size=0 must be >= 1"),
    Bad("attention=gla attention.chunk_size=0", "attention.chunk_size=0 must be >= 1"),
    Bad("attention=gla attention.min_log_decay=0", "must be >= -5 and < 0"),
    Bad("attention=retention attention.first_exponent=0", "attention.first_exponent=0.0 must be > 0"),
    Bad("attention=deltanet attention.chunk_size=-1", "attention.chunk_size=-1 must be >= 1"),
    Bad("attention=based attention.feature_dim=0", "attention.feature_dim=0 must be >= 1"),
    Bad("attention=based attention.window=-1", "attention.window=-1 must be >= 0"),
    Bad(
        "attention=nsa attention.block_size=0",
        "attention.block_size=0 must be >= 1; e.g. attention.block_size=32",
    ),
    Bad("attention=nsa attention.blok_size=16", "did you mean 'block_size'"),
    Bad(
        "attention=nsa attention.selected_blocks=2",
        "attention.selected_blocks=2 must be >= 3; e.g. attention.selected_blocks=8",
    ),
    Bad("attention=nsa attention.selected_blocks=4.5", "expected int, got float"),
    Bad("attention=nsa attention.window=0", "attention.window=0 must be >= 1; e.g. attention.window=64"),
    Bad("attention=nsa attention.chunk_size=0", "attention.chunk_size=0 must be >= 1"),
    Bad("task=translate model.decoder.cross_attention=nsa", "'nsa' does not support cross attention"),
    Bad("model.positional=alibi attention=nsa", "attention= one of full, multihead, local"),
    Bad("attention=gated_deltanet attention.dt_min=0.5 attention.dt_max=0.1", "set dt_min <= dt_max"),
    Bad("task=mqar attention=lowrank", "'lowrank' does not support causal"),
    Bad("task=mqar task.data.builtin.seq_lne=64", "did you mean 'seq_len'"),
    Bad("task=mqar task.data.builtin.num_kv_pairs=0", "num_kv_pairs"),
    Bad("task=mad task.data.builtin.kind=copying", "is unknown; set task.data.builtin.kind= one of"),
    Bad(
        "task=mad task.data.builtin.kind=compression task.data.builtin.frac_noise=0.2",
        "has no knob frac_noise",
    ),
    Bad("task=mad task.data.builtin.kind=selective_copying task.data.builtin.seq_len=32", "raise seq_len"),
    Bad("task=mad task.data.builtin.kind=noisy_recall task.data.builtin.frac_noise=1.5", "must be in [0, 1)"),
    Bad("task=mad task.data.builtin.seq_len=63", "must be even"),
    Bad("task=mad task.data.builtin.kind=fuzzy_recall task.data.builtin.k_motif_size=9", "vocab_size >= 19"),
    Bad(
        "task=mad task.data.builtin.seq_len=256 task.data.builtin.n_train=4 task.data.builtin.n_validation=4 "
        "task.data.builtin.n_test=4",
        # refused before any row is drawn (attnlab.config.sequence_lengths), not by the data module after
        "task.data.builtin.seq_len=256 is longer than model.max_len=128",
    ),
    Bad(
        # seq_len=null: the kind's own length (in_context_recall's 128), refused before a run directory exists
        "experiment=mad model.max_len=64",
        "task.data.builtin.seq_len=null (the kind's own length, 128 tokens) is longer than model.max_len=64",
    ),
    # model.max_len=null is the generated rows' length (attnlab.config.sequence_lengths.resolve_max_len);
    # rows of no set length need a number
    Bad(
        "task=lm model.max_len=null",
        "the rows of the built-in corpus generator have no set length; set model.max_len=",
    ),
    Bad(
        "task=translate model.max_len=null",
        "the rows of the built-in translation generator have no set length",
    ),
    Bad("task=translate task.data.builtin.nouns=1", "set task.data.builtin.nouns="),
    Bad("task=summarise task.data.builtin.role_rate=1.5", "set task.data.builtin.role_rate=1"),
    Bad(
        "task=summarise task.data.builtin.role_rate=1 task.data.builtin.cast=0", "or role_rate=0 for no cast"
    ),
    Bad("task=summarise task.data.builtin.max_sentences=8", "e.g. task.data.builtin.min_sentences=4"),
    Bad("task=lm model.token_shift=maybe", "model.token_shift"),
    Bad("task=lm model.tie_embeddings=sometimes", "model.tie_embeddings"),
    Bad("task=translate model.share_embeddings=sometimes", "model.share_embeddings"),
    Bad(
        "task=translate model.share_embeddings=true task.data.shared_tokenizer=false",
        "set task.data.shared_tokenizer=true or model.share_embeddings=false",
    ),
    Bad("attention=full attention.dropout=2.0", "attention.dropout=2.0 must be >= 0 and < 1"),
    Bad("attention=full attention.dropout=1", "attention.dropout=1.0 must be >= 0 and < 1"),
    Bad("attention.dropout=-0.5", "attention.dropout=-0.5 must be >= 0 and < 1"),
    Bad("attention.dropout=abc", "expected float"),
    Bad("attention=lowrank attention.k=0", "attention.k=0 must be >= 1"),
    Bad(
        "attention=lowrank attention.k=1000",
        "attention.k=1000 must be <= model.max_len=128; choose attention.k=64",
    ),
    Bad("attention=lowrank attention.share_kv=2", "expected bool"),
    Bad("attention=multihead,linear", "add --multirun"),
    Bad("task=translate attention=lowrank", "'lowrank' does not support causal"),
    # ---- model --------------------------------------------------------------------------------------
    Bad("model=tny", "did you mean 'tiny'"),
    Bad("model.d_model=abc", "expected an integer"),
    Bad("model.d_model=0", "model.d_model=0 must be a positive number"),
    Bad("model.heads=0", "model.heads=0 must be a positive number"),
    Bad("model.heads=3", "model.heads=3 does not divide model.d_model=32"),
    Bad("model.max_len=0", "model.max_len=0 must be a positive number"),
    Bad("model.max_len=-4", "model.max_len=-4 must be a positive number"),
    Bad("model.max_len=abc", "model.max_len=abc is not valid: expected an integer"),
    # issue 30: hung generating the whole set, then failed; crawled over 2-token windows
    Bad("task=mqar model.max_len=16", "task.data.builtin.seq_len=64 is longer than model.max_len=16"),
    Bad("task=lm model.max_len=1", "model.max_len=1 is too short for language modelling"),
    Bad("model.mlp_ratio=0", "model.mlp_ratio=0 must be a positive number"),
    Bad("model.encoder_layers=0", "model.encoder_layers=0 must be a positive number"),
    Bad("model.decoder_layers=-1", "model.decoder_layers=-1 must be an integer >= 1"),
    Bad("model.dropout=1.5", "model.dropout=1.5 must be in [0, 1)"),
    Bad("model.dropout=-0.1", "model.dropout=-0.1 must be in [0, 1)"),
    # ---- per-layer patterns and layer options (attnlab/nn/pattern.py, attnlab/nn/layer_options.py) ----
    Bad(
        "task=mqar model.layers=[multihed]",
        "model.layers[0]: unknown attention 'multihed' (did you mean 'multihead'?)",
    ),
    Bad("task=mqar model.layers=[]", "model.layers=[] names no layer"),
    Bad(
        "task=mqar model.layers=[gated_deltanet*3,multihead] model.decoder_layers=3",
        "model.layers has 4 layers but model.decoder_layers=3",
    ),
    Bad("task=mqar model.layers=[nystrom]", "model.layers[0]: attention 'nystrom' does not support causal"),
    Bad("task=mqar model.layers=[multihead*0]", "the repeat count 0 of 'multihead' must be an integer >= 1"),
    Bad(
        "task=mqar 'model.layers=[{name:local,windw:8}]'", "has no parameter 'windw' (did you mean 'window'?)"
    ),
    Bad("task=mqar \"model.layers=['local(window=0)']\"", "model.layers[0].window=0 must be >= 1"),
    Bad(
        "task=mqar model.layers=[linear] model.decoder.self_attention=local",
        "drop model.decoder.self_attention and name the variant in model.layers",
    ),
    Bad("task=mqar model.short_conv=-1", "model.short_conv=-1 must be 0 (off) or an integer >= 2"),
    Bad("task=mqar model.short_conv=1", "model.short_conv=1 must be 0 (off) or an integer >= 2"),
    Bad("task=mqar model.short_conv=abc", "model.short_conv=abc is not valid: expected an integer"),
    Bad("task=mqar model.output_gate=maybe", "model.output_gate"),
    Bad("task=mqar model.qk_norm=sometimes", "model.qk_norm"),
    Bad("model.positional=learnt", "did you mean 'learned'"),
    Bad(
        "model.positional=null",
        "model.positional=null is not allowed: the key needs a value; choose model.positional= one of sinusoidal",
    ),
    Bad("model.positional=alibi attention=linear", "attention= one of full, multihead, local"),
    Bad("model.positional=rope model.heads=32", "is 1, odd"),
    Bad("model.positional=rope model.rope_base=1", "must be a number > 1; e.g. model.rope_base=10000"),
    Bad("task=lm task.data.packing.boundaries=maybe", "task.data.packing.boundaries=maybe must be true"),
    # ---- seed, task module (lr, weight decay ...): typed at compose time, not after training began --
    Bad("seed=abc", "seed=abc must be an integer >= 0"),
    Bad("seed=-1", "seed=-1 must be an integer >= 0"),
    Bad("seed=1.5", "seed=1.5 must be an integer"),
    Bad("seed=99999999999", "<= 4294967295"),
    Bad("seed=null", "seed=null must be an integer"),
    Bad("task.module.lr=fast", "task.module.lr=fast must be a number > 0; e.g. task.module.lr=1e-3"),
    Bad("task.module.lr=0", "task.module.lr=0 must be a number > 0"),
    Bad("task.module.lr=-1", "task.module.lr=-1 must be a number > 0"),
    Bad("task.module.lr=nan", "task.module.lr=nan must be a number > 0"),
    Bad("task.module.weight_decay=lots", "task.module.weight_decay=lots must be a number >= 0"),
    Bad("task.module.weight_decay=-0.1", "task.module.weight_decay=-0.1 must be a number >= 0"),
    Bad("task.module.warmup_steps=-3", "task.module.warmup_steps=-3 must be an integer >= 0"),
    Bad("task.module.warmup_steps=1.5", "task.module.warmup_steps=1.5 must be an integer"),
    Bad("+task.module.momentum=0.9", "unknown config key 'task.module.momentum'"),
    Bad(
        "task=translate task.module.label_smoothing=1.5",
        "task.module.label_smoothing=1.5 must be a number >= 0 and < 1",
    ),
    Bad("task.monitor_mode=maxx", "did you mean 'max'"),
    Bad("task.pooling=max", "task.pooling='max' is unknown"),
    Bad("tags=abc", "tags=abc must be a list"),
    # ---- decoding (translate, summarise) ------------------------------------------------------------
    Bad("task=translate task.decode.beam=0", "task.decode.beam=0 must be an integer >= 1"),
    Bad("task=translate task.decode.beam=abc", "task.decode.beam=abc is not valid: expected an integer"),
    Bad(
        "task=summarise task.decode.max_new_tokens=0", "task.decode.max_new_tokens=0 must be an integer >= 1"
    ),
    Bad(
        "task=translate task.decode.length_penalty=-1",
        "task.decode.length_penalty=-1.0 must be a number >= 0",
    ),
    Bad("task=translate task.decode.val_samples=0", "task.decode.val_samples=0 must be an integer >= 1"),
    # ---- trainer --------------------------------------------------------------------------------------
    Bad("trainer=gpuu", "did you mean 'gpu'"),
    Bad("trainer.max_step=5", "unknown config key 'trainer.max_step'"),
    Bad("trainer.max_steps=0", "trainer.max_steps=0 must be an integer >= 1 (or -1)"),
    Bad("trainer.max_steps=-5", "trainer.max_steps=-5 must be an integer >= 1"),
    Bad("trainer.max_steps=1.5", "trainer.max_steps=1.5 must be an integer"),
    Bad("trainer.max_steps=abc", "trainer.max_steps=abc must be an integer"),
    Bad("trainer.val_check_interval=0", "trainer.val_check_interval=0 must be an integer >= 1"),
    # `trainer=cpu trainer.max_steps=100` (below val_check_interval) was refused here; it now validates
    # at its last step (issue 30): tests/test_short_runs.py holds the new behaviour.
    Bad("trainer=cpu trainer.max_steps=-1 callbacks.early_stopping=null", "would train forever"),
    Bad("trainer.val_check_interval=1.5", "trainer.val_check_interval=1.5 must be a number > 0 and <= 1"),
    Bad("trainer.val_check_interval=abc", "trainer.val_check_interval=abc must be an integer"),
    Bad("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch=0 must be an integer >= 1"),
    Bad("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 must be an integer >= 1"),
    Bad("trainer.max_epochs=0", "trainer.max_epochs=0 must be an integer >= 1 (or -1, null)"),
    Bad("trainer.max_epochs=abc", "trainer.max_epochs=abc must be an integer"),
    Bad("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 must be a number >= 0"),
    Bad("trainer.gradient_clip_val=abc", "trainer.gradient_clip_val=abc must be a number"),
    Bad("trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5 must be a number >= 0 and <= 1"),
    Bad("trainer.limit_val_batches=-1", "trainer.limit_val_batches=-1 must be an integer >= 0"),
    Bad("trainer.fast_dev_run=-1", "trainer.fast_dev_run=-1 must be an integer >= 0"),
    Bad("trainer.deterministic=maybe", "trainer.deterministic=maybe must be true, false or warn"),
    Bad("trainer.enable_progress_bar=maybe", "trainer.enable_progress_bar=maybe must be true or false"),
    Bad(
        "trainer.precision=fp8",
        "trainer.precision=fp8 is not allowed; choose trainer.precision= one of 32-true",
    ),
    Bad("trainer.precision=16-mixed", "needs a CUDA GPU", cpu_only=True),
    Bad("trainer.precision=16-true", "needs a CUDA GPU", cpu_only=True),
    Bad("trainer.accelerator=tpuu", "did you mean 'tpu'"),
    Bad("trainer.devices=0", "trainer.devices=0 must be an integer >= 1 (or -1, auto)"),
    Bad("trainer.devices=abc", "trainer.devices=abc is not allowed"),
    Bad("trainer.devices=[-1]", "trainer.devices[]=-1 must be an integer >= 0"),
    Bad("trainer.devices=4096", "trainer.devices=4096 on CPU starts 4096 training processes"),
    Bad("trainer=gpu", "no CUDA GPU is visible", cpu_only=True),
    # ---- data -----------------------------------------------------------------------------------------
    Bad("task=clasify", "did you mean 'classify'"),
    Bad("task.data.batch_size=0", "task.data.batch_size=0 must be an integer >= 1"),
    Bad("task.data.batch_size=1.5", "task.data.batch_size=1.5 must be an integer >= 1"),
    Bad("task.data.batch_size=abc", "task.data.batch_size=abc must be an integer"),
    # task.data is a closed typed schema (attnlab.config.data_schema): a misspelt key is not a new one
    Bad("task.data.bach_size=8", "unknown config key 'task.data.bach_size' (did you mean 'batch_size'?)"),
    Bad(
        "task=translate task.data.shared_tokenizer=maybe",
        "task.data.shared_tokenizer=maybe must be true or false",
    ),
    Bad("task.data.num_workers=-1", "task.data.num_workers=-1 must be an integer >= 0"),
    Bad("task.data.limit.train=0", "task.data.limit.train=0 must be a positive number"),
    Bad("task.data.tokenizer=bpee", "did you mean 'bpe'"),
    Bad(
        "task.data.tokenizer=bpe task.data.vocab_size=10", "task.data.vocab_size=10 must be an integer >= 262"
    ),
    Bad("task.data.columns.text=", "task.data.columns.text='' must be a column name"),
    Bad("task.data.columns=5", "task.data.columns=5 must map names to columns"),
    Bad("task.data.source=web", "unknown data source 'web'"),
    Bad("task.data.source=files", "task.data.source=files needs files"),
    Bad("task.data.source=hf", "needs a dataset name"),
    Bad("task.data.source=hf task.data.name=imdb", "task.data.source=builtin"),
    Bad("task.data.builtin.nope=1", "unknown config key 'task.data.builtin.nope'"),
    Bad("+task.data.builtin.nope=1", "unknown parameter task.data.builtin.nope for listops"),
    Bad("task.data.builtin.n_train=abc", "task.data.builtin.n_train=abc is not valid: expected an integer"),
    Bad("task.data.builtin.n_train=0", "split 'train' of the built-in dataset is empty"),
    Bad("+task.data.builtin.n_train=5", "remove + prefix"),
    Bad("task.data.source=files task.data.train={tmp}/nope.jsonl", "nope.jsonl"),
    Bad("task.data.source=files task.data.path=/etc/hostname", "unsupported data file extension"),
    Bad("@files:sentiment_column", "task.data.columns.label"),
    Bad("@files:empty_train", "empty"),
    Bad("@files:float_labels", "a class must be an integer or a name"),
    Bad("@files:unique_labels", "that is not a label column"),
    Bad("@files:unseen_label", "labels never seen in train"),
    Bad("task=translate task.data.source=shipped", "needs a set: task.data.name=gettext_de|manpages"),
    Bad("task=translate task.data.source=shipped task.data.name=gettext", "did you mean 'gettext_de'"),
    Bad("task=summarise task.data.tokenizer=bpe_placeholder", "did you mean 'bpe_placeholders'"),
    Bad(
        "task=summarise task.data.tokenizer=bpe_placeholders task.data.vocab_size=100",
        "task.data.vocab_size=100 must be an integer >= 262",
    ),
    Bad("trainer.max_time=half-an-hour", "trainer.max_time=half-an-hour must be DD:HH:MM:SS or null"),
    Bad(
        "experiment=summarise_real_gpu callbacks.average.every=0",
        "callbacks.average.every=0 must be a positive integer",
    ),
    Bad(
        "experiment=summarise_real_gpu callbacks.average.start=1.5",
        "callbacks.average.start=1.5 must be in [0, 1)",
    ),
    # ---- task.eval_lengths: lengths a generator makes, positions cover and the variant's weights fit ----
    Bad(
        "task=mqar task.eval_lengths=[]",
        "must be a non-empty list of lengths, e.g. task.eval_lengths=[256,1024,4096]",
    ),
    Bad("task=mqar task.eval_lengths=[0,64]", "every length must be a positive integer"),
    Bad("task=mqar task.eval_lengths=[-64]", "every length must be a positive integer"),
    Bad(
        "task=mqar task.eval_lengths=[64,4096]",
        "past the sinusoidal position table; choose model.positional=rope or model.positional=none",
    ),
    Bad("task=mqar model.positional=learned task.eval_lengths=[256]", "or raise model.max_len=256"),
    Bad(
        "task=translate task.eval_lengths=[64]",
        "generator 'translation', which cannot: remove task.eval_lengths",
    ),
    Bad(
        "task=lm task.data.source=hf task.data.name=wikitext task.eval_lengths=[64]",
        "data from task.data.source=hf",
    ),
    Bad(
        "task=mqar task.data.builtin.vocab_size=16 task.eval_lengths=[128]",
        "task.eval_lengths: at length 128, mqar vocab_size=16 has too few keys",
    ),
    Bad(
        "task=classify model.max_len=2048 task.eval_lengths=[1024]",
        "at length 1024, listops min_length=512 is longer than any expression",
    ),
    Bad(
        "task=passkey task.data.builtin.seq_len=128 task.data.builtin.depth=1.5",
        "depth=1.5 must be in [0, 1]",
    ),
    Bad(
        "task=passkey task.data.builtin.seq_len=128 task.data.builtin.test_depth=-1",
        "test_depth=-1.0 must be in [0, 1]",
    ),
    Bad(
        "task=passkey task.data.builtin.seq_len=128 task.data.builtin.answer_tokens=0",
        "set task.data.builtin.answer_tokens=1",
    ),
    Bad("task=passkey task.data.builtin.dept=0.5", "did you mean 'depth'"),
    # ---- paths and Hydra ------------------------------------------------------------------------------
    Bad("paths.data_cache=/proc/nope", "paths.data_cache=/proc/nope cannot be created"),
    Bad("paths.data_cache=/etc/hostname", "/etc/hostname is a file"),
    Bad("logger=csv logger.csv.save_dir=/proc/nope", "logger.csv.save_dir=/proc/nope cannot be created"),
    Bad("logger=wandbb", "did you mean 'wandb'"),
    Bad("hydra/launcher=slurmm", "unknown hydra/launcher 'slurmm' (did you mean 'slurm'?)"),
    Bad("hydra.job.chdir=maybe", "hydra.job.chdir=maybe is not valid: expected true or false"),
    Bad(
        "callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience=-1 must be an integer >= 0"
    ),
    Bad(
        "callbacks.lr_monitor.logging_interval=hour",
        "choose callbacks.lr_monitor.logging_interval= one of step",
    ),
    Bad("callbacks.cost.warmup_steps=abc", "callbacks.cost.warmup_steps=abc must be an integer"),
    # ---- checkpoints: read and compared before fitting -------------------------------------------------
    Bad("ckpt_path=/nonexistent/last.ckpt", "ckpt_path=/nonexistent/last.ckpt does not exist"),
    Bad("ckpt_path=@ckpt:text", "is not a readable checkpoint"),
    Bad("ckpt_path=@ckpt:truncated", "is not a readable checkpoint"),
    Bad("ckpt_path=@ckpt:corrupt", "is not a readable checkpoint"),
    Bad("ckpt_path=@ckpt:empty", "is an empty file"),
    Bad("ckpt_path=@ckpt:directory", "is a directory; give a .ckpt file"),
    Bad("ckpt_path=@ckpt:not_lightning", "is not a Lightning checkpoint"),
    Bad("ckpt_path=@ckpt:multihead attention=linear", "to continue it use attention=multihead"),
    Bad("ckpt_path=@ckpt:multihead model.d_model=64", "to continue it set model.d_model=32"),
    Bad("ckpt_path=@ckpt:multihead model.encoder_layers=2", "to continue it set model.encoder_layers=1"),
    Bad("ckpt_path=@ckpt:multihead task=translate", "was saved by another task"),
    Bad("ckpt_path=@ckpt:multihead @files:two_classes", "was trained on other data"),
    # ---- issue 30: nothing runaway, no tracebacks, nothing silently wrong, no raw messages -------------
    # Sizes in range that cannot fit: refused from the config's estimate (attnlab/nn/estimate.py) before
    # anything is built; test_bad_inputs.py pins the memory a row may take (ATTNLAB_MEMORY_GB=4).
    Bad("model.encoder_layers=1000", "lower model.encoder_layers=1000"),
    Bad("model.mlp_ratio=100000", "lower model.mlp_ratio=100000"),
    Bad("model.d_model=1000000", "lower model.d_model=1000000"),
    Bad("attention=based attention.feature_dim=100000", "lower attention.feature_dim=100000"),
    Bad("task=translate task.decode.beam=1000", "task.decode.beam=1000 must be an integer >= 1 and <= 64"),
    Bad(
        "task=summarise task.decode.val_beam=1000",
        "task.decode.val_beam=1000 must be an integer >= 1 and <= 64",
    ),
    Bad(
        "attention=local attention.window=99999999999999999999",
        "attention.window=99999999999999999999 is invalid for 'local': expected a 64-bit integer",
    ),
    Bad(
        "attention=based attention.window=99999999999999999999",
        "attention.window=99999999999999999999 is invalid for 'based': expected a 64-bit integer",
    ),
    Bad("attention=null", "attention=null"),
    Bad("@files:object_texts", "holds a dict in the text column"),
    Bad("@files:empty_texts", "every text in the train split"),
    Bad("@files:header_only_csv", "has a header but no rows"),
    Bad("task=mqar @files:mqar_string_ids", "ids must be a list of token ids"),
    Bad("task.data.columns.text=label", "read the same column"),
    Bad(
        "attention=retention attention.first_exponent=1e308",
        "attention.first_exponent=1e+308 must be > 0 and <= 24",
    ),
    Bad("attention=retention model.heads=32 model.d_model=64", "exactly 1 in float32"),
    Bad("ckpt_path=@ckpt:finished", "has already trained"),
    Bad("ckpt_path=@ckpt:with_data task.data.limit.train=32", "task.data.limit.train=64 there, 32 here"),
    Bad("threads=1000", "threads=1000 is more than the"),
    Bad("model.d_model=null", "model.d_model=null is not allowed"),
]

# Hydra's own flags: handled before Hydra, so checked through the CLI's preflight.
FLAGS = [
    Bad("--cfg jobb", "invalid choice: 'jobb'", "flags"),
    Bad("--config-name=nope", "--config-name=nope"),
    Bad("--config-dir=/nope", "--config-dir=/nope is not a directory", "flags"),
    Bad("--bogus", "unrecognized arguments: --bogus", "flags"),
]
FLAGS = [row._replace(what="flags") for row in FLAGS]

BENCH = [
    Bad("dtype=float16", "dtype=float16 on CPU", "bench"),
    Bad("dtype=fp8", "dtype='fp8' is not allowed", "bench"),
    Bad("'params={local: {window: 0}}' variants=[local]", "params.local.window=0 must be >= 1", "bench"),
    Bad(
        "'params={performer: {features: -1}}' variants=[performer]",
        "params.performer.features=-1 must be >= 1",
        "bench",
    ),
    Bad(
        "'params={nystrom: {conv_kernel: 2}}' variants=[nystrom]",
        "params.nystrom.conv_kernel=2 must be odd",
        "bench",
    ),
    Bad(
        "'params={full: {dropout: 1.0}}' variants=[full]",
        "params.full.dropout=1.0 must be >= 0 and < 1",
        "bench",
    ),
    Bad("'params={linear: {feature_map: tanh}}'", "choose one of ['elu', 'relu']", "bench"),
    Bad("'params={linear: {nope: 1}}'", "has no parameter 'nope'", "bench"),
    Bad("'params={local: {window: 16}}'", "'local' is not among variants", "bench"),
    Bad("params=5", "params=5 must map variants", "bench"),
    Bad("'params={linear: 5}'", "params.linear=5 must map hyperparameters", "bench"),
    Bad("lengths=[100000000]", "lengths: N=100000000 needs", "bench"),
    Bad("lengths=[10000000] batch=64", "lengths: N=10000000 needs", "bench"),
    Bad("lengths=[0]", "lengths[]=0 must be an integer >= 1", "bench"),
    Bad("lengths=[abc]", "lengths[]='abc' must be an integer", "bench"),
    Bad("lengths=[]", "lengths=[] is empty", "bench"),
    Bad("lenghts=[1]", "unknown config key 'lenghts' (did you mean 'lengths'?)", "bench"),
    Bad("time_budget_s=abc", "time_budget_s='abc' must be a number of seconds > 0", "bench"),
    Bad("time_budget_s=0", "time_budget_s=0 must be a number of seconds > 0", "bench"),
    Bad("seed=abc", "seed='abc' must be an integer >= 0", "bench"),
    Bad("mode=[]", "leaves nothing to measure", "bench"),
    Bad("causal=[]", "leaves nothing to measure", "bench"),
    Bad("causal=maybe", "causal='maybe' must be true, false or a list", "bench"),
    Bad("mode=backward", "did you mean 'forward+backward'", "bench"),
    Bad("variants=[linaer]", "variants: unknown attention 'linaer' (did you mean 'linear'?)", "bench"),
    Bad("baselines=[nope]", "baselines: unknown attention 'nope'", "bench"),
    Bad("crossover_baseline=nope", "crossover_baseline: unknown attention 'nope'", "bench"),
    Bad("device=tpu", "device='tpu' is not allowed", "bench"),
    Bad("threads=0", "threads=0 must be an integer >= 1", "bench"),
    Bad("repeats=0", "repeats=0 must be an integer >= 1", "bench"),
    Bad("warmup=-1", "warmup=-1 must be an integer >= 0", "bench"),
    Bad("target=blok", "did you mean 'block'", "bench"),
    Bad("logger=csv", "not supported by the bench", "bench"),
    Bad("batch=0", "batch=0 must be an integer >= 1", "bench"),
    # refused by BenchSchema's types when composing, worded by the same declared check
    Bad("batch=abc", "batch='abc' must be an integer >= 1", "bench"),
    Bad("repeats=1.5", "repeats=1.5 must be an integer >= 1", "bench"),
    Bad("threads=auto", "threads='auto' must be an integer >= 1", "bench"),
    Bad("time_budget_s=-1", "time_budget_s=-1 must be a number of seconds > 0", "bench"),
    Bad("time_budget_s=inf", "time_budget_s=inf must be a number of seconds > 0", "bench"),
    Bad("dtype=float64", "dtype='float64' is not allowed", "bench"),
    Bad("head_dim=1.5", "head_dim=1.5 must be an integer >= 1", "bench"),
    Bad("keep_freed_memory=maybe", "keep_freed_memory='maybe' must be true or false", "bench"),
    Bad("fit_min_length=0", "fit_min_length=0 must be an integer >= 1", "bench"),
    Bad("out_dir=/proc/nope", "out_dir=/proc/nope cannot be created", "bench"),
    Bad(
        "variants=[based] 'params={based: {feature_dim: 100000}}'",
        "'based' (params.based.feature_dim=100000",
        "bench",
    ),
    Bad("threads=1000", "threads=1000 is more than the", "bench"),
]

REPORT = [
    Bad("", "the following arguments are required: PATH", "report"),
    Bad("--cost nope {tmp}", "argument --cost: invalid choice: 'nope'", "report"),
    Bad("--bogus {tmp}", "unrecognized arguments: --bogus", "report"),
    Bad("{tmp}/nope", "does not exist", "report"),
    Bad("{tmp}", "no results.json under", "report"),
    Bad("/etc/hostname", "is not a run directory or a results.json file", "report"),
    Bad("@results:corrupt", "none of the 1 results.json file(s) could be read", "report"),
    Bad("@results:not_an_object", "not a JSON object", "report"),
    Bad("@results:metrics_not_an_object", "'metrics' is not a JSON object", "report"),
    Bad("@results:corrupt --out /etc/hostname", "--out /etc/hostname is a file", "report"),
    Bad("--allow-partial=yes {tmp}", "argument --allow-partial: ignored explicit argument 'yes'", "report"),
    Bad(
        "allow_partial=true {tmp}",
        "allow_partial=true is the study's spelling; the report takes --allow-partial",
        "report",
    ),
    Bad("@results:budget_not_an_object", "'budget' is not a JSON object", "report"),
]

VARIANTS = [Bad("--bogus", "unrecognized arguments: --bogus", "variants")]

# `python -m attnlab.study` (out={tmp}/study and a one-run, one-step grid are prepended, STUDY_TINY in
# tests/test_bad_inputs.py, so a row accepted by mistake trains one step): axes, selection, test lengths.
STUDY = [
    Bad("task=mqar grid.model.d_modle=[16,32]", "'model' has no key 'd_modle' (did you mean 'd_model'?)"),
    Bad("task=mqar tune.task.module.lrr=[1e-3,1e-2]", "'task.module' has no key 'lrr' (did you mean 'lr'?)"),
    Bad("task=mqar grid.model.d_model=[]", "grid.model.d_model=[] is empty"),
    Bad("task=mqar tune.task.module.lr=[]", "tune.task.module.lr=[] is empty"),
    Bad("task=mqar grid.model.d_model=[16,32] model.d_model=64", "given both as grid.model.d_model=[...]"),
    # task=mqar's study block tunes the learning rate by default
    Bad("task=mqar task.module.lr=1e-2", "given both as tune.task.module.lr=[...]"),
    # ... and adds the capacity point as a grid over the pairs (a fixed count is grid.<key>=[8])
    Bad("task=mqar task.data.builtin.num_kv_pairs=8", "give grid.task.data.builtin.num_kv_pairs=[value]"),
    Bad("task=mqar grid.attention=[linear,local]", "list the variants with variants=[...]"),
    Bad("task=mqar grid.seed=[0,1]", "list the seeds with seeds=[...]"),
    Bad("task=mqar grid.task=[lm,mqar]", "a study is one task"),
    Bad("task=mqar grid.model.d_model=[16] tune.model.d_model=[32]", "both vary model.d_model; keep one"),
    Bad("task=mqar grid.task.data.builtin.seq_len=[64,128]", "vary it with lengths=[...]"),
    Bad("task=mqar grid=[16,32]", "give one axis per argument"),
    Bad("task=mqar tune.task.module.lr=[fast]", "task.module.lr=fast must be a number > 0"),
    Bad("task=mqar \"grid.task.data.builtin.num_kv_pairs=[4,'4']\"", "two cells would share the name"),
    Bad("task=mqar mean_over=model.d_model", "mean_over=model.d_model: not a grid axis"),
    Bad("task=mqar eval_lengths=[]", "eval_lengths=[] is empty"),
    Bad("task=mqar eval_lengths=[0,256]", "eval_lengths: 0 is not a positive integer"),
    Bad("task=mqar eval_lengths=[-1]", "eval_lengths: -1 is not a positive integer"),
    Bad("task=mqar lengths=[abc]", "lengths: 'abc' is not a positive integer"),
    Bad("task=mqar lengths=[0]", "lengths: 0 is not a positive integer"),
    Bad("task=mqar seeds=[x]", "seeds: 'x' is not an integer"),
    Bad("task=mqar skip=[5]", "skip: 5 is not a mapping of axes to values"),
    # the task's study block, changed by an override (attnlab.config.study_schema StudyBlock)
    Bad("task=classify +task.study.grid=[16,32]", "study.grid=[16, 32] must map config keys to their values"),
    Bad(
        "task=mqar \"task.study.overrides='experiment=mqar'\"",
        "study.overrides=experiment=mqar must be a list",
    ),
    Bad("task=mqar +task.study.per_length={batch:[64]}", "study.per_length.batch must map lengths"),
    Bad("task=mqar task.eval_lengths=[256,4096]", "give the study eval_lengths=[...] instead"),
    Bad("task=mqar allow_partial=maybe", "allow_partial=maybe: expected true or false"),
    Bad("task=mqar skip=[{lenght:64}]", "'lenght' is not an axis of this study (did you mean 'length'?)"),
    Bad("task=mqar lengths=[64] skip=[{length:64}]", "skip= leaves no cell to run"),
    Bad("task=mqar trainer.max_steps=2,3", "grid.trainer.max_steps=[...]"),
    # hybrids where a variant name goes (attnlab.nn.pattern)
    Bad(
        "task=mqar variants=[gated_deltanet*3+multihed]",
        "unknown attention 'multihed' (did you mean 'multihead'?)",
    ),
    Bad(
        "task=mqar variants=[gated_deltanet*3+lowrank]",
        "'lowrank' (a layer of 'gated_deltanet*3+lowrank') does not",
    ),
    Bad("task=mqar variants=[gated_deltanet*0+multihead]", "gated_deltanet*0"),
]
STUDY = [row._replace(what="study") for row in STUDY]

ROWS = [*APP, *FLAGS, *BENCH, *REPORT, *VARIANTS, *STUDY]

"""A run's config (DESIGN.md "The layout we are moving to"), one module per job:

    preflight         the one preflight of every command (app, bench, study, check gpu): flags, overrides,
                      one composition, the checks; composition errors worded into one line
    single_run        a single run launched from that composition (Hydra's run_job): composed once
    overrides         the command line's overrides, checked before composing
    schemas           the configs stored into Hydra's ConfigStore; TrainerConfig typed
    bench_schema      BenchSchema: conf/bench.yaml's keys typed, each with its declared check
    study_schema      StudyArgs, StudyBlock: the study's command-line keys and a task's study: block typed
    fields            per-field checks declared beside a schema's fields (ranges, choices, formats)
    checks            what relates two fields, and the untyped groups' values (check_config)
    sequence_lengths  model.max_len against the task's rows
    eval_lengths      task.eval_lengths against the task, the positions and the variant

Each failure is a one-line fix. Imports nothing: the app, the bench, the study and the GPU check
import the module they need."""

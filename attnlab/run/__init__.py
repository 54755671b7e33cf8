"""One `python -m attnlab` run (DESIGN.md "The layout we are moving to"), one module per job:

    app           the command line: preflight, @hydra.main, exit statuses, the sweep summary
    train         run(cfg): data module -> task -> Lightning Trainer -> results
    results       the one home of a run's files: results.json, failed.json, sweep_summary.json
    callbacks     the cost meter, checkpoint averaging, the NaN/Inf guard, the graceful stop
    checkpoints   what a checkpoint carries (data settings, exact-resume state), the checks on resuming
    budget        steps done of planned, and what stopped the run
    schedule      validation within a short run's budget
    eval_lengths  the same weights tested at other lengths
    lock          one run per run directory
    interrupts    SIGTERM and Ctrl-C in every phase
    tracking      wandb: offline without a key, never held up by a server

CPU threads and the allocator are attnlab.host's (the bench uses them too). Imports nothing.
"""

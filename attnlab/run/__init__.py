"""The run's rooms (DESIGN.md "The layout we are moving to"): what one `python -m attnlab` run does
around training. Moved here so far: its budget (steps done of planned, what stopped it), the schedule
of a short run, the run directory's lock, signals in every phase, and the evaluation at other lengths.
attnlab.app, attnlab.train, attnlab.callbacks and attnlab.results move here next (issue 32)."""

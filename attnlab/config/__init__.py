"""A run's config (DESIGN.md "The layout we are moving to"): the configs stored into Hydra's
ConfigStore (`schemas`), and the checks on a composed config that Hydra's types cannot express
(`checks`, `sequence_lengths`), each failure a one-line fix. Imports nothing: the app, the bench,
the study and the GPU check import the module they need."""

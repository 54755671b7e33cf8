"""Cost benchmark: time, peak memory and FLOPs of attention variants as N grows.

    python -m attnlab.bench variants=[full,multihead,linear] lengths=[1024,4096] mode=forward+backward

Modules, one job each: config (check the Hydra config), workload (one point as a callable),
memory (peak-memory methods), measure (timing + FLOPs of a point), sweep (the loop and `run`),
analysis (ratios, exponents, crossovers), output (csv/json/tables), plot (bench.png),
wandb_log (offline-aware wandb).
"""

from attnlab.bench.analysis import crossover, fit_exponent
from attnlab.bench.sweep import run

__all__ = ["crossover", "fit_exponent", "run"]

"""What one process asks of the machine it runs on, shared by the run, the bench and the config
checks (so none of them imports another for it):

    threads    CPU threads and OpenMP's wait policy
    allocator  glibc keeps freed memory for reuse (CPU timings measure compute, not page faults)
    resident   the process's resident memory and its high-water mark (Linux /proc): a run's and a bench
               point's peak

Imports nothing, so `import attnlab` sets OpenMP's wait policy (threads) before torch is imported.
"""

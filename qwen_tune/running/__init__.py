"""A run from start to end: the run directory, swift as a child process, the OOM ladder's attempts, locks, results."""

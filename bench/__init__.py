"""The benchmark suite: middlewared against bare references, measured in the same run."""

"""What agent and collector share: metric catalogue, retry policy, durations, log format,
terminal escaping, private files. Imports neither side."""

"""Command-line tools that work on models, checkpoints and logs: summary, benchmark, report, export."""

"""The papers' reported numbers (paper_results.csv), transcribed from METHODS.md with their sources."""

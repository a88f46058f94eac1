"""One module per pipeline stage. Each stage is compiled once per policy revision."""

"""Hardware profiles (schema, memory model), mapping onto cores, per-core budget reports."""

"""Model specs, data sets, DEEP R (pure NumPy rewiring core), float models and the trainer."""

"""Sweeps over connectivity x method x seed, their statistics and plots."""

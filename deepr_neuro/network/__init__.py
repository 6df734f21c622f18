"""The deployed network as plain integer data, and Lava's fixed-point numbers (bottom layer)."""

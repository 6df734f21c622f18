"""Simulator backends of the integer network (emulator, Lava, Brian2) and cross-checks."""

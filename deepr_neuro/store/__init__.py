"""Run directories on disk: the bundle (manifest + arrays), its validation, locks and safe replacement."""

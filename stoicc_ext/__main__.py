"""``python -m stoicc_ext``: the ``stoicc`` command line (``stoicc_ext.cli``)."""
import sys

from .cli import main

sys.exit(main())

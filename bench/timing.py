from stoicc_ext.timing import *  # noqa: F401,F403  (the protocol lives in the package; benchmarks and the demo share it)

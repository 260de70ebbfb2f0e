"""The benchmarks, as a package: run each with ``python -m bench.<name>`` from the repository
root (``python bench/<name>.py`` works too).

Shared modules:
- ``bench.shapes``: the weight shapes timed, each with its model and projection.
- ``bench.timing``: the timing protocol (the library's ``stoicc_ext.timing``: CUDA graphs, weights
  rotated past the L2, median), the bandwidth ceilings and the eager host cost.
- ``bench.run_info``: commit, date, result-file tag and datasheet peaks of the GPU.
- ``bench.check_targets``: the speed and memory targets counted from a result JSON.
- ``bench.plots``: PNG figures of a result JSON (matplotlib, optional).

Benchmarks: ``bench_kernels`` (kernel table), ``e2e`` (end-to-end model; its parts are the
``e2e_*`` modules), ``bench_inspector``, ``in_model_probe``; tools: ``ab_configs``,
``profile_case``. Results (data only) go to ``bench/results/``; bench/README.md describes the
methods.
"""

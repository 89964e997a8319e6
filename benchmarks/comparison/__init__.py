"""The method comparison behind ``benchmarks/compare.py``, in four steps.

* :mod:`.launch`: names, budgets, run folders and ports; the parallel-slot launcher of the
  ``launchers/run_task.sh`` runs.
* :mod:`.load`: a finished run folder (``summary.json``, ``actor_config.json``,
  ``metrics/actor.jsonl``, ``gate_timeline.jsonl``) as a flat dict.
* :mod:`.aggregate`: seed means and standard deviations per task and method, the comparison
  with the baseline (IR reduction, SR difference, the issue's target), the settings the runs
  used and where they differ.
* :mod:`.render`: ``results.json``, ``results.md`` and the figures (``benchmarks/compare_plots.py``).

No module here defines absl flags: ``benchmarks/compare.py`` is the command line.
"""

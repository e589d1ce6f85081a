"""The evidence study as a small package; ``benchmarks/study.py`` is its command line.

- :mod:`.runs`: a run's folder, name and records (``evals.csv``, ``time.csv``,
  ``starts.log``), and the states a run can be in (finished, diverged, paused);
- :mod:`.search`: protocol 01's symmetric learning-rate search (grid, rule, extension);
- :mod:`.plans`: the variants (launcher overrides) and the plans (which runs) as data;
- :mod:`.data`: CIFAR-10 on disk and the held-out validation split;
- :mod:`.evaluation`: the offline kNN, the untrained-backbone reference, the linear probes;
- :mod:`.launcher`: the worker that trains one run through this package's launcher;
- :mod:`.official`: the worker that trains one run through the official EffSSL loop;
- :mod:`.orchestration`: the study's settings, its plans run in order, resume and pause;
- :mod:`.stats`: clipped wall-clock, interpolation, the rule for calling a difference, and
  protocol 02's Welch and paired intervals with its verdict;
- :mod:`.comparisons`: the report's pairwise comparisons;
- :mod:`.report`: ``report.md`` and ``study.png`` rebuilt from whatever finished;
- :mod:`.equal_compute`: protocol 02's arms (protocol 01's learning rates, the epochs the
  step cost buys) fixed in ``arms.json``, as plans of variants with their own schedules;
- :mod:`.final_measures`: protocol 02's test-set measures of finished runs (kNN against the
  run's own and an unseen reference, linear probe) into ``final.json``;
- :mod:`.equal_compute_report`: protocol 02's ``equal_compute.md``.

Every module imports torch, Lightning, Hydra and matplotlib only inside the functions that
need them, so that the command line and the report start quickly.
"""

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
- :mod:`.stats`: clipped wall-clock, interpolation, the rule for calling a difference,
  protocol 02's Welch and paired intervals with its verdict, and protocol 05's interval of
  the change of a difference (a signed sum of four independent means);
- :mod:`.comparisons`: the report's pairwise comparisons;
- :mod:`.report`: ``report.md`` and ``study.png`` rebuilt from whatever finished;
- :mod:`.equal_compute`: protocol 02's arms (protocol 01's learning rates, the epochs the
  step cost buys) fixed in ``arms.json``, as plans of variants with their own schedules;
- :mod:`.final_measures`: protocols 02's and 05's test-set measures of finished runs (kNN
  against the run's own and an unseen reference, linear probe) into ``final.json``;
- :mod:`.equal_compute_report`: protocol 02's ``equal_compute.md``;
- :mod:`.scale`: protocol 05's regimes (R2: the 40% share; R3: resnet18), each a study whose
  arms are fixed by protocol 02's rule from its own step cost;
- :mod:`.scale_report`: protocol 05's ``report.md`` and ``scale.png`` over its regimes, with
  R1 read from protocol 02's short budget.

Every module imports torch, Lightning, Hydra and matplotlib only inside the functions that
need them, so that the command line and the report start quickly.
"""

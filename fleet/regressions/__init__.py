"""Baselines and regression detection: each series' new result against its own history.

A series is one case on one device (`SERIES_TAGS`, plus `context_tokens` for a `generation`
record). For each watched metric (`fleet.suite.REGRESSION_METRICS`) the newest valid result
is compared with a baseline:

- the baseline is the mean of the series' last `window` valid results (`history` of them at
  least) that belong to its reference level, or the value of a pinned run
  (`fleet baseline pin RUN`);
- the reference level is found by change-point detection over the whole valid history
  (E-Divisive means, `change_points`): it is the first level, replaced only by a later one that
  is better by at least the minimum effect (a confirmed improvement). A level that is worse
  never becomes the reference by itself: a regression stays open until it is fixed, or
  accepted by pinning a run;
- within the reference level, results that were themselves flagged when they came are left
  out of the baseline (`_replay`), so a regression's first nights never dilute it;
- a change is flagged when it is outside the Student-t prediction interval of the baseline
  (99 %: night-to-night spread and the new result's own confidence interval) AND at least
  the suite's minimum effect (`regressions: {latency_pct, memory_pct, accuracy_pp}`);
- `since_run` is where the shift began: the start of the change-point segment the new result
  lies in (or of the run of flagged results just before it).

Only valid results (`valid` true, status ok) are judged or become baselines. docs/regressions.md
explains the choices; bench/nightly_series.py measures them on a lab.

The modules: `series` (what a series is, its metrics and points), `changepoints`
(E-Divisive), `judge` (one series against its baseline), `check` (a stored run, its records
and the gate), `stored` (the regression records in the store, `fleet results regressions`).
"""

"""`wgen bench`: the headline benchmark (docs/architecture.md, "The benchmark") — fine-tuning
held-out concepts from every method's initial weights: `methods` (the registry), `stage`
(checks, the three splits, actor pool, resume), `curves` (pure readings of a
quality-versus-steps curve), `stats` (censored medians, paired ratios, bootstrap
intervals), `report` (results.json, report.md, figures)."""

"""`wgen bench`: the headline benchmark (DESIGN.md) — fine-tuning held-out concepts from
every method's initial weights: `methods` (the registry), `curves` (pure readings of a
quality-versus-steps curve), `stage` (checks, actor pool, resume), `report` (results.json,
report.md, figures)."""

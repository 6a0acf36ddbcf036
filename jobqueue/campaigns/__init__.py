"""AI-visibility campaigns: a prompt set asked on several platforms (a fan-out batch per run,
on demand or on a schedule), each answer analysed by a dependent `campaign.extract` job, and
a report per brand x platform x day read from a rollup. Modules: model (the checked
definition), store (Postgres), runs (a run's batch and extract jobs), extract (the analysis
and its task), report (the figures)."""

"""Metabase both ways: saved questions in as cohorts, dbt exposures out as questions.

`client` speaks the REST API; `cohorts` imports a saved question's rows into
`raw.metabase_cohort_<name>`; `provision` creates or updates the questions and dashboards
declared as dbt exposures; `metadata` pushes dbt descriptions through dbt-metabase;
`commands` is what the CLI calls.
"""

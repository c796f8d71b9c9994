"""Alembic's migrations of the program database (models/schema.py runs them).

`python -m models.migrations <alembic command>` is Alembic's own command line on this
folder and on PRAKERJA_DATABASE_URL, e.g. `revision --autogenerate -m "..."`.
"""

"""Thin Prefect tasks over ``embetter_core``: one task per pipeline step.

Tasks pass small things between them (paths, row ranges, one chunk's texts and vectors);
a whole corpus never travels through Prefect results. Every task is declared with
:func:`tasks.options.step` (the shared options), and no task imports ``flows``.
"""

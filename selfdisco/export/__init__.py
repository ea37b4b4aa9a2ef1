"""Exporting a discovered loss: the recipe record (recipe.py), building it from a run and writing
the export directory (build.py), the files' text (template.py), and training it again
(reproduce.py)."""

"""The shipped rules files, installed as the package `parc_surgery.configs`.

They live at the top of the repository so they are easy to find and copy; pyproject maps
this folder to `parc_surgery.configs`, and `parc-surgery rules list` lists them.
"""

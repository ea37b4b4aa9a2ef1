# expect: exactly one top-level function
# ruff: noqa
x = 1

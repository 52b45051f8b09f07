"""The local AWS stand-in: a moto server, the infra/ template deployed into it, and a seeded fleet.

Used by `make run` (the demo sandbox), by the tests (small fleets) and by bench/ (large fleets).
Nothing here is imported by the code location itself.
"""

"""fleetsim: a small step-level serving twin for lab-03 (given code, not student work).

profile.py (step time), engine.py (one instance's scheduler), link.py (the KV wire), workload.py
(arrivals), fleet.py (fleets and the event loop), planner.py (rate sweeps and goodput search).
"""

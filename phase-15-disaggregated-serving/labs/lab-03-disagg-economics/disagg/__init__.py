"""lab-03's given tables: model shapes, fabrics, accelerators, and the Verdict/Decision types (``disagg.tables``)."""

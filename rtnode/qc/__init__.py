"""Course QC: checks with pass/warn/fail and a reason each, qc.json and report.html."""

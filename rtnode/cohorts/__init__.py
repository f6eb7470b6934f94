"""Research cohorts: retrieval from a PACS (C-FIND/C-MOVE, resumable, gentle) and import from
disk. Both file instances through the same archive as clinical traffic, tagged so that the
courses they complete run at cohort priority."""
